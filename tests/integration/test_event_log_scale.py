"""The event log's walk by type at scale (r16), on DynamoDB Local: a day holding 10,000 events
of another type before the 3 asked for. Each events() call is bounded (at most
EVENT_LIST_QUERIES queries, each evaluating at most EVENT_FILTER_READ items, so a page may be
empty and still carry a cursor); following the cursor reaches every event asked for, once,
in order; the figures (calls, items evaluated, read units, seconds) are printed."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import outpost.store as store
from outpost.bootstrap import aws, message_store, settings
from outpost.clock import iso
from outpost.events import Event
from outpost.store import EventLogStore

pytestmark = pytest.mark.timeout(600)
DAY = 86400.0
OTHERS = 10_000


class _Counted:
    """The real client; every Query's items evaluated (ScannedCount) and read units kept."""

    def __init__(self, ddb):
        self.ddb, self.queries = ddb, []

    def __getattr__(self, name):
        return getattr(self.ddb, name)

    def query(self, **kwargs):
        r = self.ddb.query(ReturnConsumedCapacity="TOTAL", **kwargs)
        self.queries.append((r["ScannedCount"], r.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)))
        return r


def _event(mid: str, n: int, ts: float, type: str) -> Event:
    return Event(event_id=f"evt_{mid}{n:05d}", type=type, timestamp=iso(ts), message_id=f"{mid}{n % 50:02d}",
                 recipient=f"r{n}@accept.test", data={"message_id": mid, "recipient": f"r{n}@accept.test",
                                                      "state": type.removeprefix("message."), "tags": {},
                                                      "attempt": {"code": 250, "tls": {"verified": True}}})


def test_a_rare_type_behind_ten_thousand_others_is_reached_in_bounded_calls(local_stack):
    mid = secrets.token_hex(6)
    start = time.time() - 26 * DAY  # a day no other test writes to
    rare = [_event(mid, i, start + i, "message.complained") for i in range(3)]  # the day's oldest
    others = [_event(mid, 3 + i, start + 10 + i * 0.5, "message.delivered") for i in range(OTHERS)]
    log = EventLogStore(aws("dynamodb"), settings().messages_table, message_store(), clock=lambda: start + 3 * 3600)
    chunks = [others[i:i + 250] for i in range(0, OTHERS, 250)]
    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(lambda c: log.add_events(c, time.time()), chunks)) == OTHERS
    assert log.add_events(rare, time.time()) == 3
    counted = _Counted(aws("dynamodb"))
    log = EventLogStore(counted, settings().messages_table, message_store(), clock=lambda: start + 3 * 3600)
    calls, got, cursor, slowest = 0, [], None, 0.0
    while True:
        before, t0 = len(counted.queries), time.perf_counter()
        page = log.events(type="message.complained", since=iso(start - 1), limit=50, cursor=cursor)
        slowest = max(slowest, time.perf_counter() - t0)
        calls += 1
        mine = counted.queries[before:]
        assert len(mine) <= store.EVENT_LIST_QUERIES
        assert all(scanned <= store.EVENT_FILTER_READ for scanned, _ in mine)
        got += [e.event_id for e in page.items]
        if (cursor := page.cursor) is None:
            break
    assert got == [e.event_id for e in rare][::-1]  # each once, newest first
    units = sum(u for _, u in counted.queries)
    per_call = max(sum(u for _, u in counted.queries[i:i + store.EVENT_LIST_QUERIES])
                   for i in range(0, len(counted.queries), store.EVENT_LIST_QUERIES))
    print(f"\nby type behind {OTHERS} others: {calls} calls, {len(counted.queries)} queries, "
          f"{sum(s for s, _ in counted.queries)} items evaluated, {units:.1f} read units "
          f"(at most {per_call:.1f} a call), slowest call {slowest:.2f} s")
    assert calls <= OTHERS // (store.EVENT_LIST_QUERIES * store.EVENT_FILTER_READ) + 3
