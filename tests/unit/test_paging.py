"""Cursor checks (issue 8, item 22): every malformed cursor is a 400 naming `cursor`."""

from __future__ import annotations

from datetime import UTC

import pytest

from outpost.api.paging import Cursor, check_key, decode_cursor, encode_cursor, query_digest
from outpost.errors import InvalidRequestError

ATTRS = ("pk", "sk", "gsi3pk", "gsi3sk")
KEY = {"pk": "MSG#a", "sk": "RCPT#000", "gsi3pk": "DAY#2026-11-29", "gsi3sk": "2026-11-29T10:00:00.000Z#a#000"}


def test_a_cursor_round_trips_for_its_own_query():
    q = query_digest("messages", None, "complained", None)
    c = decode_cursor(encode_cursor(Cursor("2026-11-29", KEY), q), parts=["2026-11-29"], key_attrs=ATTRS, query=q)
    assert c == Cursor("2026-11-29", KEY)
    assert check_key(c, "gsi3pk", "DAY#2026-11-29", sort=("gsi3sk", "2026-11-29T00:00:00.000Z")) == KEY


def test_a_start_key_below_since_is_refused():
    c = Cursor("2026-11-29", KEY)
    with pytest.raises(InvalidRequestError) as e:
        check_key(c, "gsi3pk", "DAY#2026-11-29", sort=("gsi3sk", "2026-11-29T11:00:00.000Z"))
    assert e.value.field == "cursor"


def test_the_digest_binds_every_parameter():
    assert len({query_digest("messages", None, s, None) for s in ("queued", "bounced", None)}) == 3
    q = query_digest("messages", None, "bounced", None)
    value = encode_cursor(Cursor("d", None), q)
    with pytest.raises(InvalidRequestError):
        decode_cursor(value, parts=["d"], key_attrs=ATTRS, query=query_digest("messages", None, None, None))


@pytest.mark.parametrize("size", [10, 1000, 100_000, 1_000_000, 10_000_000])
def test_huge_cursors_are_refused_before_decoding(size):
    import time

    value = "A" * size
    started = time.thread_time()
    with pytest.raises(InvalidRequestError):
        decode_cursor(value, parts=["d"], key_attrs=ATTRS)
    # CPU time of this thread: a preempted test on a loaded machine is not a decoded cursor
    assert time.thread_time() - started < 0.05  # refused on length, not decoded


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deeply_nested_cursor_json_is_a_400(depth):
    import base64

    raw = base64.urlsafe_b64encode(b"[" * depth + b"]" * depth).decode().rstrip("=")
    with pytest.raises(InvalidRequestError):
        decode_cursor(raw[:2048], parts=["d"], key_attrs=ATTRS)


def test_a_since_outside_datetimes_utc_range_is_clamped_not_a_server_error() -> None:
    # Found by schemathesis: 0001-01-01T00:00:05+02:01 is before year 1 in UTC, and
    # astimezone(UTC) raised OverflowError (a 503 from GET /v1/bounces?since=...).
    from datetime import datetime, timedelta, timezone

    from outpost.api.paging import since_iso

    early = datetime(1, 1, 1, 0, 0, 5, tzinfo=timezone(timedelta(hours=2, minutes=1)))
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3)))
    assert since_iso(early) == "0001-01-01T00:00:00.000Z"
    assert since_iso(late) == "9999-12-31T23:59:59.999Z"
    assert since_iso(datetime(2026, 11, 30, 1, 0, tzinfo=UTC)) == "2026-11-30T01:00:00.000Z"
