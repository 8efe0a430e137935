"""The request as stored with a message, and as the sender reads it back: its own model.

The API validates a `POST /v1/messages` body with `models.SendRequest` (every cap, every rule
of today) and converts it into a `StoredRequest`, which is what the store keeps and the sender
builds from. The two change for different reasons: the API's rules tighten over time, while a
request accepted yesterday must still deliver today. So this model is

- versioned: `v` (1 now); a request stored before versions existed has none and reads as 1;
- lenient: fields it does not know are ignored, every field has a default, and it applies no
  API cap (sizes, counts, lengths);
- checked only for what delivery needs: addresses that parse, header fields that cannot
  inject (one line, a valid name, not one Outpost writes itself), bodies that are Unicode,
  attachments that are base64 or an upload. A stored request that breaks one of these cannot
  be built safely, whatever rules it was accepted under.

Two kinds: "json" (the API's fields; the sender builds the MIME, mime.py) and "raw" (SMTP
submission: `raw` holds the client's message as Outpost finished it, raw_message.py, base64;
the sender signs and sends those bytes as they are). Both are stored inline or in S3 by size.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .addresses import AddressError, line_trouble, parse_address
from .models import _HEADER_NAME, OWNED_HEADERS, SendRequest

VERSION = 1


def _one_line(value: str) -> str:
    trouble = line_trouble(value)
    if trouble is not None:
        raise ValueError(trouble)
    return value


class StoredAttachment(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    filename: str = "attachment"
    content: str | None = None  # base64
    upload_id: str | None = None  # S3 uploads/<id>
    content_type: str = "application/octet-stream"
    content_id: str | None = None

    @field_validator("filename", "content_id")
    @classmethod
    def _header_safe(cls, v: str | None) -> str | None:
        return None if v is None else _one_line(v)

    @field_validator("content")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("content is not valid base64") from None
        return v

    @field_validator("content_type")
    @classmethod
    def _type(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"invalid content type {v!r}")
        return _one_line(v)

    @model_validator(mode="after")
    def _one_source(self) -> StoredAttachment:
        if (self.content is None) == (self.upload_id is None):
            raise ValueError("exactly one of content or upload_id is required")
        return self


class StoredRequest(BaseModel):
    """What the sender builds a message from (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, defer_build=True)

    v: int = VERSION
    from_: str = Field(alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: list[str] = Field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: list[StoredAttachment] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    tls: str = "opportunistic"
    raw: str | None = None  # kind "raw": the message bytes, base64 (from_ is its From mailbox)

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        return _address(v)

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        return _one_line(v)

    @field_validator("text", "html")
    @classmethod
    def _unicode(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"contains a lone surrogate at position {exc.start}") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r} (RFC 5322 §3.6.8)")
            if name.lower() in OWNED_HEADERS or name.lower().startswith("content-"):
                raise ValueError(f"header {name!r} is set by Outpost")
            trouble = line_trouble(value)
            if trouble is not None:
                raise ValueError(f"header {name!r} {trouble}")
        return v

    # ---- conversions ----------------------------------------------------------------------------
    @classmethod
    def from_request(cls, req: SendRequest) -> StoredRequest:
        """The API's validated request, as it will be stored."""
        return cls.model_validate(req.model_dump(mode="json", by_alias=True, exclude_defaults=True))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredRequest:
        """A stored request read back (any version this code knows; unknown fields ignored)."""
        return cls.model_validate(json.loads(raw))

    @classmethod
    def from_raw(cls, message: bytes, sender: str) -> StoredRequest:
        """A submitted message (raw_message.RawMessage.finish's bytes) and its From mailbox."""
        return cls.model_validate({"from": sender, "raw": base64.b64encode(message).decode("ascii")})

    @property
    def kind(self) -> str:
        return "json" if self.raw is None else "raw"

    def raw_bytes(self) -> bytes:
        """The stored message of a "raw" request, exactly as accepted."""
        if self.raw is None:
            raise ValueError("not a raw request")
        return base64.b64decode(self.raw, validate=True)

    def to_json(self) -> bytes:
        body = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        body["v"] = self.v  # always written, though it is the default: a reader knows the shape
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _address(value: str) -> str:
    try:
        parse_address(value)
    except AddressError as exc:
        raise ValueError(f"invalid address: {exc}") from None
    return str(value).strip()
