"""The event log's store (store.EventLogStore) on DynamoDB Local: each event once, the TTL of
messages, lists by day, message and type through the table's indexes, newest or oldest first,
walking day partitions with the opaque cursor, and refusing a cursor that is not its own."""

from __future__ import annotations

import secrets
import time

import pytest

from outpost.bootstrap import aws, event_log, message_store, settings
from outpost.clock import iso
from outpost.errors import InvalidRequestError
from outpost.events import Event
from outpost.store import EventLogStore

pytestmark = pytest.mark.timeout(120)
DAY = 86400.0


def _event(mid: str, n: int, ts: float, type: str = "message.deferred") -> Event:
    return Event(event_id=f"evt_{mid}{n:04d}", type=type, timestamp=iso(ts), message_id=mid,
                 recipient=f"r{n}@accept.test", data={"message_id": mid, "recipient": f"r{n}@accept.test",
                                                      "state": type.removeprefix("message."), "tags": {},
                                                      "attempt": {"code": 451, "tls": {"verified": True}}})


@pytest.fixture
def past(local_stack):
    """Nine events on three days 20, 19 and 18 days ago (no other test writes there), and a log
    whose clock says it is 18 days ago."""
    mid = secrets.token_hex(8)
    start = time.time() - 20 * DAY
    events = [_event(mid, d * 3 + i, start + d * DAY + i * 60, "message.bounced" if i == 2 else "message.deferred")
              for d in range(3) for i in range(3)]
    log = EventLogStore(aws("dynamodb"), settings().messages_table, message_store(),
                        clock=lambda: start + 2 * DAY + 3600)
    assert log.add_events(events, time.time()) == 9
    return log, mid, events, start


def test_each_event_is_stored_once_with_the_messages_ttl(local_stack):
    mid = secrets.token_hex(8)
    e = _event(mid, 0, time.time())
    now = time.time()
    assert event_log().add_events([e, e], now) == 1
    assert event_log().add_events([e], now) == 0
    (got,) = event_log().events(message_id=mid).items
    assert got == e  # the record as published, data and all
    item = aws("dynamodb").get_item(TableName=settings().messages_table,
                                    Key={"pk": {"S": f"EVT#{e.event_id}"}, "sk": {"S": "EVENT"}})["Item"]
    assert int(item["expires_at"]["N"]) == message_store().expires_for(now, None)


def test_days_are_walked_newest_first_or_oldest_first_with_the_cursor(past):
    log, mid, events, start = past
    ids = [e.event_id for e in events]
    pages, cursor = [], None
    while True:
        page = log.events(since=iso(start - 1), limit=2, cursor=cursor)
        pages.append([e.event_id for e in page.items])
        cursor = page.cursor
        if cursor is None:
            break
    assert [i for p in pages for i in p] == ids[::-1] and all(len(p) <= 2 for p in pages)
    # replay: oldest first from `since`, the first day's first event left out by it
    got, cursor = [], None
    while True:
        page = log.events(since=events[1].timestamp, limit=4, cursor=cursor, oldest_first=True)
        got += [e.event_id for e in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert got == ids[1:]


def test_by_message_and_by_type(past):
    log, mid, events, start = past
    assert [e.event_id for e in log.events(message_id=mid, limit=100).items] == [e.event_id for e in events][::-1]
    bounced = [e.event_id for e in events if e.type == "message.bounced"]
    assert [e.event_id for e in log.events(message_id=mid, type="message.bounced").items] == bounced[::-1]
    assert [e.event_id for e in log.events(type="message.bounced", since=iso(start - 1), limit=100).items
            if e.message_id == mid] == bounced[::-1]


def test_a_cursor_of_another_query_or_a_forged_one_is_refused(past):
    log, mid, events, start = past
    page = log.events(since=iso(start - 1), limit=2)
    assert page.cursor
    with pytest.raises(InvalidRequestError) as e:
        log.events(since=iso(start - 1), limit=2, cursor=page.cursor, oldest_first=True)
    assert e.value.field == "cursor"
    for bad in ("x", "eyJwIjoxfQ", page.cursor[:-4]):
        with pytest.raises(InvalidRequestError):
            log.events(since=iso(start - 1), cursor=bad)
