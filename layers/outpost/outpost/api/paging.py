"""Opaque pagination cursors: where the next page of an index walk starts.

A cursor is URL-safe base64 of a small JSON document: which partition of the walk we are in
(a day, a bounce type, a suppression source) and DynamoDB's LastEvaluatedKey inside it. Callers
treat it as opaque; we validate it on the way back in (shape, and that its key belongs to the
partition it names), so a forged cursor gets 400, never a DynamoDB error.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import ValidationFailed

MAX_KEY_ATTRS = 6


@dataclass(frozen=True)
class Cursor:
    part: str  # the partition of the walk (day, type, source)
    key: dict[str, str] | None  # LastEvaluatedKey inside it; None: start of the partition


def encode_cursor(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    raw = json.dumps({"p": cursor.part, "k": cursor.key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None, *, parts: list[str] | None = None) -> Cursor | None:
    """Parse a cursor; `parts`, when given, are the partitions this walk may be in."""
    if not value:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        part, key = doc["p"], doc["k"]
        if not isinstance(part, str) or not (key is None or isinstance(key, dict)):
            raise ValueError("shape")
        if key is not None and (len(key) > MAX_KEY_ATTRS or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) < 1100 for k, v in key.items())):
            raise ValueError("key")
        if parts is not None and part not in parts:
            raise ValueError("partition")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("invalid cursor: pass back next_cursor as given", field="cursor") from None
    return Cursor(part, key)


def check_key(cursor: Cursor | None, attribute: str, expected: str) -> dict[str, str] | None:
    """The cursor's start key, if its partition attribute is `expected` (else 400)."""
    if cursor is None or cursor.key is None:
        return None
    if cursor.key.get(attribute) != expected:
        raise ValidationFailed("invalid cursor: it belongs to another query", field="cursor")
    return cursor.key


def iso(dt: datetime | None) -> str | None:
    """A query's `since` in the store's timestamp format (UTC, milliseconds, Z)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
