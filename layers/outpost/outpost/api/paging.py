"""Opaque pagination cursors: where the next page of an index walk starts.

A cursor is URL-safe base64 of a small JSON document: which partition of the walk we are in
(a day, a bounce type, a suppression source), DynamoDB's LastEvaluatedKey inside it, and a
digest of the query it belongs to. Callers treat it as opaque; we validate it fully on the way
back in, so a forged or stale cursor gets 400 naming `cursor`, never a DynamoDB error (503):
  - the JSON shape, and a size cap before anything is decoded;
  - the key holds exactly the attributes of the index it continues (no missing, no extra),
    each a bounded string;
  - its partition attribute is the partition it names, and its sort key is inside the query's
    range (DynamoDB refuses a start key "outside query boundaries");
  - the digest matches the query (recipient, filter, since): a cursor from one query cannot
    continue another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from ..clock import iso_of
from ..errors import InvalidRequestError

MAX_CURSOR_CHARS = 2048  # the query parameter's declared maxLength
MAX_KEY_VALUE = 1100  # DynamoDB: a partition key is at most 2048 bytes, a sort key 1024


@dataclass(frozen=True)
class Cursor:
    part: str  # the partition of the walk (day, type, source)
    key: dict[str, str] | None  # LastEvaluatedKey inside it; None: start of the partition


def query_digest(*values: object) -> str:
    """What a cursor is bound to: the query's parameters, except the page size and cursor."""
    raw = json.dumps([None if v is None else str(v) for v in values], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def encode_cursor(cursor: Cursor | None, query: str = "") -> str | None:
    if cursor is None:
        return None
    raw = json.dumps({"p": cursor.part, "k": cursor.key, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad(why: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid cursor ({why}): pass back next_cursor as given, with the "
                            "same query", field="cursor")


def decode_cursor(value: str | None, *, parts: list[str],
                  key_attrs: Iterable[str] | Callable[[str], Iterable[str]],
                  query: str = "") -> Cursor | None:
    """Parse and check a cursor: `parts` are the partitions this walk may be in, `key_attrs`
    the exact attributes of its start key (or a function of the partition giving them, asked
    only once the cursor has passed every other check), `query` the digest of the query it
    must belong to."""
    if not value:
        return None
    if len(value) > MAX_CURSOR_CHARS:
        raise _bad("too long")
    try:
        doc = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: 1,536 bytes of "[" nest deeper than the JSON decoder recurses.
        raise _bad("not a cursor") from None
    if not isinstance(doc, dict) or set(doc) != {"p", "k", "q"}:
        raise _bad("not a cursor")
    part, key, q = doc["p"], doc["k"], doc["q"]
    if not isinstance(part, str) or part not in parts:
        raise _bad("unknown partition")
    if q != query:
        raise _bad("it belongs to another query")
    if key is not None:
        attrs = key_attrs(part) if callable(key_attrs) else key_attrs
        if not isinstance(key, dict) or set(key) != set(attrs):
            raise _bad("wrong key attributes")
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_KEY_VALUE for v in key.values()):
            raise _bad("wrong key values")
    return Cursor(part, key)


def check_key(cursor: Cursor | None, attribute: str, expected: str, *,
              sort: tuple[str, str | None] | None = None) -> dict[str, str] | None:
    """The cursor's start key, if its partition attribute is `expected` and its sort key
    (`sort` = (attribute, lower bound)) is not below the query's range (else 400)."""
    if cursor is None or cursor.key is None:
        return None
    if cursor.key.get(attribute) != expected:
        raise _bad("it belongs to another query")
    if sort is not None and sort[1] is not None and cursor.key.get(sort[0], "") < sort[1]:
        raise _bad("outside the query's range")
    return cursor.key


def since_iso(dt: datetime | None) -> str | None:
    """A query's `since` in the records' timestamp format (clock.iso_of). A `since` whose UTC
    time falls outside datetime's range (0001-01-01T00:00:05+02:01 is still in year 0 in UTC)
    is clamped to the first or last instant: every record is after the one, none after the other."""
    if dt is None:
        return None
    try:
        return iso_of(dt)
    except OverflowError:
        return "0001-01-01T00:00:00.000Z" if dt.year == 1 else "9999-12-31T23:59:59.999Z"
