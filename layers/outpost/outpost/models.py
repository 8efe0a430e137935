"""pydantic models at the edges: the send API's request body and the queue's job body.

Inside the library, state travels as plain dicts (DynamoDB items) and frozen dataclasses.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .addresses import AddressError, line_trouble, parse_address
from .config import DEFAULT_MAX_LIFETIME, SQS_MAX_RETENTION

MAX_RECIPIENTS = 50
MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES's limit for the whole message

# Headers Outpost writes itself; a caller may not set them (issue 5).
OWNED_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "dkim-signature",
    "return-path", "received", "mime-version", "sender",
}
# Custom fields RFC 5322 §3.6 allows once per message (the others it limits are owned).
ONE_INSTANCE_HEADERS = {"reply-to", "in-reply-to", "references"}
# RFC 5322 §3.6.8 ftext: printable ASCII except ':'. Always fullmatch(): `$` would also match
# before a trailing newline, and "X-Evil\n" would end the header section at the receiver.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# A field name cannot be folded: "Name: " must fit the 78-character line RFC 5322 §2.1.1 asks for
# (the hard limit, 998, leaves no room for the value).
MAX_HEADER_NAME = 76
# One unfolded line's worth (RFC 5322 §2.1.1). Python's email package folds a value into
# encoded words at about 15 us per non-ASCII character, so the cap also bounds the cost of
# building (and of checking, in the API) every header.
MAX_HEADER_VALUE = 998
MAX_HEADERS = 50
# Display names go out as RFC 2047 encoded words, which Python's email package folds at about
# 0.2 ms per non-ASCII character: 50 recipients with 900-character names took 11 s to build.
MAX_DISPLAY_NAME = 128
MAX_REPLY_TO = 10
MAX_ADDRESS = 1024  # checked before parsing: a name, quotes, an address


class _Model(BaseModel):
    """Every edge model builds its validator on first use, not at import: a function pays only
    for the models it touches (the sender uses two of the API's twenty) on a cold start."""

    model_config = ConfigDict(defer_build=True)


class RecipientState(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    COMPLAINED = "complained"
    SCHEDULED = "scheduled"  # issue 14: waits for its send_at (open: the sweeper still finds it)
    CANCELED = "canceled"  # issue 14: POST /v1/messages/{id}/cancel (final)


# The states the sender claims from: scheduled is open but is first moved to queued when due
# (delivery/scheduling.py), so no claim can ever take a recipient before its send_at.
SENDABLE_STATES = (RecipientState.QUEUED, RecipientState.DEFERRED)
OPEN_STATES = (*SENDABLE_STATES, RecipientState.SCHEDULED)
FINAL_STATES = tuple(s for s in RecipientState if s not in OPEN_STATES)
# What POST /v1/messages/{id}/cancel may cancel (when no sender holds it in a transaction).
CANCELABLE_STATES = OPEN_STATES


def _address(value: Any) -> str:
    """Validate an address (with optional display name) and keep it as the caller wrote it."""
    if isinstance(value, str) and len(value) > MAX_ADDRESS:
        raise ValueError(f"invalid address: longer than {MAX_ADDRESS} characters")
    try:
        parsed = parse_address(value)
    except AddressError as exc:
        raise ValueError(f"invalid address: {exc}") from None
    if len(parsed.display_name) > MAX_DISPLAY_NAME:
        raise ValueError(f"invalid address: the display name is longer than {MAX_DISPLAY_NAME} "
                         "characters")
    return str(value).strip()


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


def _one_line(v: str) -> str:
    """Anything that ends up in a header: no line break of any kind Python's email package
    knows (header injection), no control character, no lone surrogate."""
    trouble = line_trouble(v)
    if trouble is not None:
        raise ValueError(trouble)
    return v


def _unicode(v: str | None) -> str | None:
    """A body must be encodable as UTF-8: JSON can carry a lone surrogate, which cannot."""
    if v is not None:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"contains a lone surrogate at position {exc.start}, which is not "
                             "valid Unicode") from None
    return v


# The same rule for the OpenAPI document (an ECMA-262 pattern; lone surrogates cannot be written
# in a JSON Schema pattern and are refused by _one_line all the same).
ONE_LINE_PATTERN = "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"
OneLine = Annotated[str, AfterValidator(_one_line), Field(json_schema_extra={"pattern": ONE_LINE_PATTERN})]
AddressStr = Annotated[str, BeforeValidator(_address)]
AddressList = Annotated[list[AddressStr], BeforeValidator(_one_or_many)]


UPLOAD_ID = r"^[0-9a-f]{32}$"
# send_at (issue 14): RFC 3339 §5.6 date-time, the offset required (a naive time is ambiguous).
SEND_AT_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
MAX_SCHEDULE = 30 * 86400  # seconds: send_at at most this far ahead


def _rfc3339(value: Any) -> Any:
    """send_at as RFC 3339 text with an offset (Z or +hh:mm), nothing else pydantic's lax
    datetime would take (a number of seconds, a naive time)."""
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value  # already read (a request built again from a validated one: a template send)
    if not isinstance(value, str) or len(value) > 40 or not re.fullmatch(SEND_AT_PATTERN, value):
        raise ValueError("send_at must be an RFC 3339 date-time with an offset or Z, such as "
                         "2026-12-01T09:00:00Z")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"send_at {value!r} is not a valid date-time") from None


class Attachment(_Model):
    """An attachment: its bytes inline (`content`, base64) or uploaded first (`upload_id`).

    Inline bytes share the request body with everything else, and API Gateway -> Lambda caps a
    request at 6 MB; an upload (POST /v1/uploads, then PUT to S3) lets the whole message reach
    the 40 MB limit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: OneLine = Field(min_length=1, max_length=255)
    content: str | None = Field(default=None, description="base64-encoded bytes (or use upload_id)")
    upload_id: str | None = Field(default=None, pattern=UPLOAD_ID,
                                  description="from POST /v1/uploads, once the bytes are PUT there")
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    content_id: OneLine | None = Field(default=None, max_length=255, description="for inline images (cid:)")

    @field_validator("content")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content is not valid base64") from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.content is None) == (self.upload_id is None):
            raise ValueError("exactly one of content or upload_id is required")
        return self


class SendRequest(_Model):
    """`POST /v1/messages` body: today's rules, all of them. What is stored and delivered is
    its conversion, stored_request.StoredRequest, whose rules do not tighten with these."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    from_: AddressStr = Field(alias="from", description='"Name <user@your-domain>" or "user@your-domain"')
    to: AddressList = Field(default_factory=list)
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list)
    reply_to: AddressList = Field(default_factory=list, json_schema_extra={"maxItems": MAX_REPLY_TO})
    subject: OneLine = Field(default="", max_length=998, description="required unless `template` is given")
    text: Annotated[str | None, AfterValidator(_unicode)] = None
    html: Annotated[str | None, AfterValidator(_unicode)] = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={"maxProperties": MAX_HEADERS,
                           "propertyNames": {"pattern": f"^[!-9;-~]{{1,{MAX_HEADER_NAME}}}$"},
                           "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE,
                                                    "pattern": ONE_LINE_PATTERN}},
        description="extra header fields; Outpost's own (From, To, Subject, Content-*, ...) are refused")
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    tls: Literal["opportunistic", "required", "verified"] = Field(
        default="opportunistic",
        description="opportunistic: STARTTLS when offered, else plaintext; required: never "
                    "plaintext, any certificate; verified: TLS 1.2+ with a certificate valid "
                    "for the MX name, else deferred (4.7.5)",
    )
    expires_in: int = Field(
        default=DEFAULT_MAX_LIFETIME, ge=60, le=SQS_MAX_RETENTION,
        description="seconds to keep retrying before a recipient ends `expired`",
    )
    send_at: Annotated[datetime | None, BeforeValidator(_rfc3339)] = Field(
        default=None, json_schema_extra={"format": "date-time", "pattern": SEND_AT_PATTERN},
        description="RFC 3339 with an offset or Z, at most 30 days ahead: the recipients stay "
                    "`scheduled` until then (cancel with POST /v1/messages/{id}/cancel); "
                    "expires_in counts from it. A time not in the future sends at once")
    # Issue 14: a stored template in place of subject/html/text, rendered when the API accepts
    # the message (api/service.py; templates/). Checked in _whole and _variables.
    template: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                                 description="a stored template's alias, in place of subject, html and text")
    template_version: int | None = Field(default=None, ge=1, description="a version of it (default: the latest)")
    variables: dict[str, Any] | None = Field(default=None, description="the template's variables "
                                             "(at most 64 KiB as JSON, nested at most 10 deep)")

    @field_validator("variables")
    @classmethod
    def _variables(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else check_variables(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if len(v) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} header fields")
        seen: set[str] = {"reply-to"} if info.data.get("reply_to") else set()
        for name, value in v.items():
            if name.lower() in ONE_INSTANCE_HEADERS & seen:
                raise ValueError(f"header {name!r} would appear twice (with another spelling or "
                                 "with reply_to); RFC 5322 §3.6 allows one")
            seen.add(name.lower())
            if len(name) > MAX_HEADER_NAME:
                raise ValueError(f"header name {name[:MAX_HEADER_NAME]!r}... is longer than "
                                 f"{MAX_HEADER_NAME} characters")
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}: printable ASCII except ':' "
                                 "(RFC 5322 §3.6.8)")
            if name.lower() in OWNED_HEADERS or name.lower().startswith("content-"):
                raise ValueError(f"header {name!r} is set by Outpost and cannot be overridden")
            trouble = line_trouble(value)
            if trouble is not None:
                raise ValueError(f"header {name!r} {trouble}")
            if len(value) > MAX_HEADER_VALUE:
                raise ValueError(f"header {name!r} is longer than {MAX_HEADER_VALUE} characters")
        return v

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_REPLY_TO:
            raise ValueError(f"at most {MAX_REPLY_TO} reply_to addresses")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if len(k) > 128 or len(val) > 256:
                raise ValueError("tag names are at most 128 and values 256 characters")
        return v

    @model_validator(mode="after")
    def _whole(self) -> SendRequest:
        _template_or_body(self)
        if self.template is None and self.text is None and self.html is None:
            raise ValueError("at least one of text or html is required")
        n = len(self.to) + len(self.cc) + len(self.bcc)
        if n == 0:
            raise ValueError("at least one recipient (to, cc or bcc) is required")
        if n > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in all, got {n}")
        return self

    def encoded_size(self, uploaded: int = 0) -> int:
        """An upper estimate of the MIME message's size in bytes, for the 40 MB limit.

        Bodies go out quoted-printable or base64 (at most 4/3 of their UTF-8 size, plus a
        CRLF every 76 characters); inline attachments arrive base64 already and keep that size.
        `uploaded` is the raw size of the uploaded attachments (one count per use), which go
        out base64 as well: 4 characters per 3 bytes.
        """
        body = sum(len(b.encode("utf-8")) for b in (self.text, self.html) if b)
        attached = sum(len(a.content) for a in self.attachments if a.content is not None)
        attached += (uploaded + 2) // 3 * 4
        heads = sum(len(k) + len(v.encode("utf-8")) + 4 for k, v in self.headers.items())
        addresses = sum(len(a) + 2 for a in (*self.to, *self.cc, *self.reply_to, self.from_))
        return (body * 4 // 3 + attached) * 78 // 76 + heads + addresses + len(self.subject) * 2 + 2048

    def recipients(self) -> list[tuple[str, str]]:
        """(address, field) for each envelope recipient, de-duplicated, in order."""
        seen: set[str] = set()
        out: list[tuple[str, str]] = []
        for field, values in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            for v in values:
                addr = parse_address(v).addr
                if addr.lower() not in seen:
                    seen.add(addr.lower())
                    out.append((addr, field))
        return out


MAX_VARIABLES_BYTES = 65_536  # a template's variables document, as JSON (issue 14)
MAX_VARIABLES_DEPTH = 10


def check_variables(v: dict[str, Any]) -> dict[str, Any]:
    """A template's variables: bounded in size (as compact JSON) and nesting, before any use."""
    import json

    def depth(x: Any, d: int) -> None:
        if d > MAX_VARIABLES_DEPTH:
            raise ValueError(f"nested more than {MAX_VARIABLES_DEPTH} deep")
        for y in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()):
            depth(y, d + 1)

    depth(v, 1)
    if len(json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")) \
            > MAX_VARIABLES_BYTES:
        raise ValueError(f"at most {MAX_VARIABLES_BYTES} bytes as JSON")
    return v


def _field_error(field: str, message: str, value: Any) -> ValidationError:
    """A 422 naming `field` from a model validator (a ValueError there names no field)."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    return ValidationError.from_exception_data("SendRequest", [InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=(field,), input=value)])


def _template_or_body(req: SendRequest) -> None:
    """Issue 14: `template` (with `variables`, `template_version`) or subject/html/text. A field
    of the other form may be there empty (null, or "" for the subject): a request dumped with
    its defaults (model_dump) reads back as it was."""
    if req.template is None:
        for name in ("template_version", "variables"):
            if getattr(req, name) is not None:
                raise _field_error(name, f"{name} goes with template", getattr(req, name))
        if "subject" not in req.model_fields_set:
            raise _field_error("subject", "subject is required (or give template)", None)
        return
    for name in ("subject", "html", "text"):
        if getattr(req, name):
            raise _field_error(name, f"give either template or {name} (the template has its own)",
                               getattr(req, name))


class QueueJob(_Model):
    """The SQS message body: a pointer to a stored message, never the message itself.

    The message and its per-recipient state live in DynamoDB (and S3 for large bodies), so a
    job of a few dozen bytes stays far below SQS's 256 KiB/1 MiB limits whatever the mail's size.
    """

    model_config = ConfigDict(extra="ignore")

    v: int = 1
    message_id: str
    attempt: int = 1
    not_before: float | None = None  # epoch seconds; SQS delays cap at 15 min, so long waits hop
    # The sender's bookkeeping (delivery/service.py). `token` names the message's current job:
    # a job whose token is not the one stored on the message is a stale duplicate and is
    # dropped (None: the first job, queued by the API before any token was stored).
    token: str | None = None
    releases: int = 0  # consecutive runs that released recipients without an attempt
    # 2xx replies the previous run could not record (the store failed): recorded first, and
    # never sent again (issue 8 item 9). [{"index": n, "attempt": {...}}]
    delivered: list[dict] | None = None
    # The slow lane (issue 8, head-of-line blocking): recipients whose MX was too slow to open a
    # session on the new-mail lane are handed here (the retry queue), where no open time limit
    # applies, so a slow receiver takes retry-lane senders, not everybody's.
    slow: bool = False


def error_field(exc: ValidationError) -> tuple[str | None, str]:
    """The first error of a pydantic ValidationError as (field path, message)."""
    err = exc.errors()[0]
    parts: list[str] = []
    for p in err.get("loc", ()):
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif str(p).startswith("function-"):
            continue
        else:
            parts.append("from" if p == "from_" else str(p))
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return (".".join(parts) or None), msg


# ---------------------------------------------------------------------------------------------
# API bodies besides SendRequest, and the responses (they make the OpenAPI document's schemas;
# Powertools validates every response against its route's return type).
# ---------------------------------------------------------------------------------------------
MAX_BATCH = 500


class ErrorDetail(_Model):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(_Model):
    """The one error shape of the API."""

    error: ErrorDetail


class RecipientStatus(_Model):
    address: str
    status: Literal["queued", "suppressed", "scheduled"]


class SendResponse(_Model):
    """202: accepted. Suppressed recipients are not sent to; the others are queued."""

    id: str
    recipients: list[RecipientStatus]


class BatchRequest(_Model):
    """`POST /v1/messages/batch`: each message is validated and answered on its own, so one bad
    message does not reject the others (items are checked against SendRequest one by one)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="up to 500 bodies, each as for POST /v1/messages")


class BatchResult(_Model):
    index: int
    status: int = Field(description="202 accepted, or the status the single send would have had")
    id: str | None = None
    recipients: list[RecipientStatus] | None = None
    error: ErrorDetail | None = None


class BatchResponse(_Model):
    accepted: int
    rejected: int
    results: list[BatchResult]


class Attempt(_Model):
    model_config = ConfigDict(extra="allow")

    at: str | None = None
    mx: str | None = None
    tls: Any = None
    reply: Any = None


class WaitingView(_Model):
    """Why an open recipient waits with no attempt counted, and until when (issue 11)."""

    reason: Literal["suspended", "shaping", "warmup", "paused"]
    provider: str = Field(description="the provider waited for; for `paused`, the paused sending "
                          "domain (`domain:<name>`) or API key (`key:<id>`)")
    until: str = Field(description="RFC 3339: when it is looked at again")
    detail: str = ""


class RecipientView(_Model):
    model_config = ConfigDict(extra="allow")

    address: str
    field: str | None = None
    state: str
    updated_at: str | None = None
    next_attempt_at: str | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    last: dict[str, Any] | None = None
    bounce: dict[str, Any] | None = None
    bounces: list[dict[str, Any]] = Field(default_factory=list)
    waiting: WaitingView | None = None


class MessageView(_Model):
    id: str
    from_: str = Field(alias="from")
    subject: str
    created_at: str
    expires_at: str
    tags: dict[str, str] = Field(default_factory=dict)
    tls: str | None = None
    status: str = Field(description="sending (a recipient queued or deferred), scheduled (one "
                        "waits for send_at), else the final state of all, or partial")
    recipients: list[RecipientView]
    send_at: str | None = Field(default=None, description="RFC 3339: scheduled for (issue 14)")
    mode: str = Field(default="live", description="test: sent with a test-mode API key, simulated (Sandbox)")
    template: str | None = Field(default=None, description="the template it was rendered from (issue 14)")
    template_version: int | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class MessageListItem(_Model):
    """One recipient of one message (a message to three recipients is three items)."""

    id: str
    recipient: str
    status: str
    created_at: str
    updated_at: str | None = None
    from_: str | None = Field(default=None, alias="from")
    subject: str | None = None
    mode: str = Field(default="live", description="test: sent with a test-mode API key, simulated (Sandbox)")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class MessageList(_Model):
    items: list[MessageListItem]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class CancelRecipient(_Model):
    address: str
    status: str = Field(description="its state after the cancel: canceled, or the state it is in")
    in_transaction: bool = Field(default=False, description="a sender holds it in an SMTP "
                                 "transaction now: not canceled; that transaction finishes")


class CancelResponse(_Model):
    """200 from POST /v1/messages/{id}/cancel, whether or not anything was left to cancel."""

    id: str
    canceled: int = Field(description="recipients now canceled (by this call or an earlier one)")
    recipients: list[CancelRecipient]


class BounceView(_Model):
    model_config = ConfigDict(extra="allow")

    message_id: str
    address: str
    type: str
    kind: str | None = None
    status: str | None = None
    reason: str | None = None
    diagnostic: str | None = None
    reporting_mta: str | None = None
    remote_mta: str | None = None
    received_at: str


class BounceList(_Model):
    items: list[BounceView]
    next_cursor: str | None = None


class SuppressionView(_Model):
    model_config = ConfigDict(extra="allow")

    address: str
    source: str | None = None
    reason: str | None = None
    kind: str | None = None
    message_id: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    created_at: str | None = None
    added_by: str | None = None
    history: list[dict[str, Any]] | None = None


class SuppressionList(_Model):
    items: list[SuppressionView]
    next_cursor: str | None = None


class SuppressionPut(_Model):
    model_config = ConfigDict(extra="forbid")

    reason: OneLine = Field(default="manual", min_length=1, max_length=256)



class SuppressionRemoved(_Model):
    address: str
    removed_at: str
    removed_by: str


class UploadRequest(_Model):
    """`POST /v1/uploads`: announce an attachment to be PUT to S3 (bodies over API Gateway's 6 MB)."""

    model_config = ConfigDict(extra="forbid")

    filename: OneLine = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    size: int = Field(ge=1, description=f"exact size in bytes; at most {MAX_MESSAGE_BYTES} (40 MB, "
                                        "and the whole message must fit too)")



class UploadResponse(_Model):
    """201: PUT the bytes to `url` with exactly these headers, then send with the upload_id."""

    upload_id: str
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="send exactly these (they are signed)")
    expires_in: int = Field(description="seconds the URL stays valid")


class DomainCreate(_Model):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=3, max_length=253, description="the domain you send from")
    mta_sts: bool = Field(default=False, description="also suggest an MTA-STS policy (RFC 8461)")


class DnsRecord(_Model):
    purpose: str = Field(description="dkim, spf, dmarc, bounce_mx, mta_sts")
    type: str
    name: str
    value: str
    required: bool = True
    status: Literal["verified", "missing", "wrong", "unchecked", "retiring"] = "unchecked"
    found: list[str] = Field(default_factory=list, description="what DNS answered")
    note: str | None = None


class DomainView(_Model):
    domain: str
    verified: bool = Field(description="DKIM verified: sending from this domain is allowed")
    created_at: str | None = None
    verified_at: str | None = None
    selectors: list[str] = Field(default_factory=list)
    pending_selectors: list[str] = Field(default_factory=list)
    records: list[DnsRecord]
    mta_sts_policy: str | None = None
    checked_at: str | None = Field(default=None, description="the last verify (admin or scheduled)")
    dkim_failing_since: str | None = Field(
        default=None, description="a verified domain's DKIM record has been missing or wrong since; "
        "it is un-verified 72 h later unless the record returns")
    unverified_at: str | None = None


# ---- reputation (issue 11 item 6) ---------------------------------------------------------------
class ReputationWindowView(_Model):
    sent: int = Field(description="recipients accepted for delivery in the window")
    hard_bounces: int
    complaints: int
    bounce_rate: float = Field(description="hard_bounces / sent (0 when nothing was sent)")
    complaint_rate: float
    counts: bool = Field(description="sent >= min_volume: only then do the rates move the state")


class ReputationThresholdsView(_Model):
    warn_bounce_rate: float
    warn_complaint_rate: float
    pause_bounce_rate: float
    pause_complaint_rate: float
    min_volume: int


class ReputationItem(_Model):
    type: Literal["domain", "key"]
    name: str = Field(description="the sending domain, or the API key's id")
    state: Literal["ok", "warn", "paused"]
    since: str | None = Field(default=None, description="RFC 3339: in this state since")
    reason: str | None = Field(default=None, description="the rate and the threshold it crossed")
    resumed_by: str | None = None
    resumed_at: str | None = None
    windows: dict[str, ReputationWindowView] = Field(description="`24h` and `7d`")


class ReputationList(_Model):
    thresholds: ReputationThresholdsView
    items: list[ReputationItem]


def rendered_trouble(subject: str, text: str | None, html: str | None) -> tuple[str | None, str] | None:
    """What SendRequest's validation would say of a template's rendering, as (field, message), or
    None: the only fields a rendering changes (the rest of the request was validated as sent),
    checked in the model's order with its messages, without validating the whole request again
    (issue 14's template sends did: ~1 ms a message)."""
    limit = next(m.max_length for m in SendRequest.model_fields["subject"].metadata
                 if getattr(m, "max_length", None) is not None)
    if len(subject) > limit:
        return "subject", f"String should have at most {limit} characters"
    checks: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("subject", lambda: _one_line(subject)), ("text", lambda: _unicode(text)), ("html", lambda: _unicode(html)))
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            return name, str(exc)
    if text is None and html is None:
        return None, "at least one of text or html is required"
    return None
