"""The event log's store (store.EventLogStore) on DynamoDB Local: each event once, the TTL of
messages, one index entry per event (issue 15 item 4), lists by day, message and type (the
table's key, gsi3, the day walk filtered), newest or oldest first, walking partitions with the
opaque cursor, the first layout's items still listed, and refusing a cursor not its own."""

from __future__ import annotations

import secrets
import time

import pytest

from outpost.bootstrap import aws, message_store, settings
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


class _Metered:
    """The real client, with every PutItem's consumed capacity by table and index kept."""

    def __init__(self, ddb):
        self.ddb, self.consumed = ddb, []

    def __getattr__(self, name):
        return getattr(self.ddb, name)

    def put_item(self, **kwargs):
        r = self.ddb.put_item(ReturnConsumedCapacity="INDEXES", **kwargs)
        self.consumed.append(r["ConsumedCapacity"])
        return r


def test_each_event_is_stored_once_with_the_messages_ttl_and_one_index_entry(local_stack):
    mid = secrets.token_hex(8)
    e = _event(mid, 0, time.time())
    now = time.time()
    ddb = _Metered(aws("dynamodb"))
    log = EventLogStore(ddb, settings().messages_table, message_store())
    assert log.add_events([e, e], now) == 1
    assert log.add_events([e], now) == 0
    (got,) = log.events(message_id=mid).items
    assert got == e  # the record as published, data and all
    key = {"pk": {"S": f"EVTMSG#{mid}"}, "sk": {"S": f"{e.timestamp}#{e.event_id}"}}
    item = aws("dynamodb").get_item(TableName=settings().messages_table, Key=key)["Item"]
    assert int(item["expires_at"]["N"]) == message_store().expires_for(now, None)
    # issue 15 item 4: the item and one index entry (gsi3, by day), 2 write units, not 4
    (written,) = ddb.consumed
    assert written["Table"]["CapacityUnits"] == 1.0
    assert {k: v["CapacityUnits"] for k, v in written.get("GlobalSecondaryIndexes", {}).items()} == {"gsi3": 1.0}
    assert not {"gsi1pk", "gsi1sk", "received_at"} & set(item)  # no by-message nor by-type entry


def _first_layout_item(e: Event, expires: int) -> dict:
    """An event as the first layout wrote it (before issue 15 item 4): pk=EVT#<id>, in gsi1,
    gsi3 and gsi4."""
    sort = f"{e.timestamp}#{e.event_id}"
    return dict(e.as_dict(), pk=f"EVT#{e.event_id}", sk="EVENT", expires_at=expires,
                gsi3pk=f"EVTDAY#{e.timestamp[:10]}", gsi3sk=sort, gsi1pk=f"EVTMSG#{e.message_id}",
                gsi1sk=sort, received_at=sort)


def test_events_of_the_first_layout_are_still_listed_with_the_new_ones(local_stack):
    """An upgraded stack: a message's first three events written by the old layout, its next
    three by the new one; every walk lists all six in order, across pages."""
    from outpost.store import codec

    mid = secrets.token_hex(8)
    start = time.time() - 26 * DAY
    events = [_event(mid, i, start + i * 3600, "message.bounced" if i % 2 else "message.deferred")
              for i in range(6)]
    for e in events[:3]:
        aws("dynamodb").put_item(TableName=settings().messages_table,
                                 Item=codec().item(_first_layout_item(e, int(time.time()) + 3600)))
    log = EventLogStore(aws("dynamodb"), settings().messages_table, message_store(),
                        clock=lambda: start + 6 * 3600)
    assert log.add_events(events[3:], time.time()) == 3
    ids = [e.event_id for e in events]

    def walk(**query) -> list[list[str]]:
        pages, cursor = [], None
        while True:
            page = log.events(cursor=cursor, **query)
            pages.append([e.event_id for e in page.items if e.message_id == mid])
            if (cursor := page.cursor) is None:
                return pages

    assert log.events(message_id=mid, limit=10).items == events[::-1]  # both layouts read back whole
    assert sum(walk(message_id=mid, limit=2), []) == ids[::-1]
    assert sum(walk(message_id=mid, limit=4, oldest_first=True), []) == ids
    assert sum(walk(message_id=mid, limit=1, since=events[2].timestamp, oldest_first=True), []) == ids[2:]
    assert sum(walk(since=iso(start - 1), limit=2), []) == ids[::-1]
    assert sum(walk(type="message.bounced", since=iso(start - 1), limit=1), []) == ids[1::2][::-1]
    assert sum(walk(type="message.bounced", message_id=mid, limit=1, oldest_first=True), []) == ids[1::2]


def test_a_type_is_filtered_from_the_day_walk_in_full_pages(local_stack, monkeypatch):
    """By type: the day walk reads ahead and cuts the page after `limit`, its cursor right
    after the last event given, so nothing is skipped or given twice (EVENT_FILTER_READ made
    small here, so pages are cut inside a query and queries end inside a page)."""
    import outpost.store as store

    monkeypatch.setattr(store, "EVENT_FILTER_READ", 7)
    mid = secrets.token_hex(8)
    start = time.time() - 28 * DAY
    events = [_event(mid, i, start + i, "message.bounced" if i % 4 == 1 else "message.deferred")
              for i in range(40)]
    log = EventLogStore(aws("dynamodb"), settings().messages_table, message_store(),
                        clock=lambda: start + 60)
    assert log.add_events(events, time.time()) == 40
    bounced = [e.event_id for e in events if e.type == "message.bounced"]
    for oldest_first in (False, True):
        pages, cursor = [], None
        while True:
            page = log.events(type="message.bounced", since=iso(start - 1), limit=3, cursor=cursor,
                              oldest_first=oldest_first)
            pages.append(page.items)
            if (cursor := page.cursor) is None:
                break
        got = [e.event_id for p in pages for e in p if e.message_id == mid]
        assert got == (bounced if oldest_first else bounced[::-1])
        assert all(e.type == "message.bounced" for p in pages for e in p)
        assert all(len(p) == 3 for p in pages[:-2])  # full pages (the walk ends on a day change)


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


def test_a_by_message_cursor_stays_in_its_message(past):
    """Both parts of the walk by message (the table's key, then the first layout's gsi1)
    refuse a key of another message or of the other part's shape."""
    import base64
    import hashlib
    import json

    log, mid, events, start = past
    digest = hashlib.sha256(json.dumps([None, None, mid, False]).encode()).hexdigest()[:16]

    def cursor(part: str, key: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps({"p": part, "k": key, "q": digest}).encode()).decode()

    sk = f"{events[0].timestamp}#{events[0].event_id}"
    forged = [cursor(mid, {"pk": "EVTMSG#other", "sk": sk}),
              cursor(mid, {"pk": f"EVTMSG#{mid}", "sk": sk, "gsi1pk": f"EVTMSG#{mid}", "gsi1sk": sk}),
              cursor(f"v1:{mid}", {"pk": f"EVTMSG#{mid}", "sk": sk}),
              cursor(f"v1:{mid}", {"pk": "x", "sk": "x", "gsi1pk": "EVTMSG#other", "gsi1sk": sk}),
              cursor("v1:other", None)]
    for bad in forged:
        with pytest.raises(InvalidRequestError):
            log.events(message_id=mid, cursor=bad)
    page = log.events(message_id=mid, limit=4)  # a real one continues where it stopped
    assert [e.event_id for e in log.events(message_id=mid, limit=100, cursor=page.cursor).items] == \
        [e.event_id for e in events][::-1][4:]
