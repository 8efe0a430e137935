"""Creation events from the commit (s16f), attacked at its edges (r17), on DynamoDB Local's real
stream (sender_rig), with the service built as bootstrap.event_service builds it:
- a commit of 150 recipients (the store has no limit of its own; the API's is 50), read back in
  two BatchGetItem calls whose keys DynamoDB leaves partly unprocessed: each creation event once;
- a scheduled message with a recipient suppressed at acceptance, delivered at its send_at:
  `message.scheduled` and `message.suppressed` from the commit, `message.queued` once at
  send_at, then `message.delivered`; the whole stream read again (a batch Lambda retries) gives
  the same event ids, record by record as in one batch."""

from __future__ import annotations

from typing import Any

import pytest
from sender_rig import Rig
from test_events_commit_stream import _publish
from test_store_crash_points import _stream_records

from outpost.clock import iso
from outpost.events.source import event_id
from outpost.ids import new_message_id
from outpost.models import QueueJob, SendRequest
from outpost.records import Message, Recipient, RecipientState, Suppression
from outpost.store import MessageStore
from outpost.stored_request import StoredRequest

pytestmark = pytest.mark.timeout(180)


class PartlyUnprocessed:
    """The rig's client; each BatchGetItem is given to DynamoDB Local with at most `take` of its
    keys, the rest answered as UnprocessedKeys (as DynamoDB does over 16 MB or when throttled)."""

    def __init__(self, real: Any, take: int) -> None:
        self.real, self.take, self.calls = real, take, 0

    def batch_get_item(self, RequestItems: dict) -> dict:  # noqa: N803 - boto3's name
        self.calls += 1
        [(table, req)] = RequestItems.items()
        now, later = req["Keys"][:self.take], req["Keys"][self.take:]
        out = self.real.batch_get_item(RequestItems={table: {**req, "Keys": now}})
        if later:
            out["UnprocessedKeys"] = {table: {**req, "Keys": later}}
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_commit_of_150_recipients_read_back_partly_unprocessed_gives_each_event_once(engine: Rig) -> None:
    rig = engine
    n, mid, now = 150, new_message_id(), rig.clock()
    meta = Message(message_id=mid, from_="app@sender.test", from_domain="sender.test", subject="many",
                   tags={"run": "r17"}, tls="opportunistic", deliver_until=now + 3600, recipient_count=n, size=10)
    rcpts = [Recipient(message_id=mid, index=i, address=f"r{i}@many.test", state=RecipientState.QUEUED)
             for i in range(n)]
    req = StoredRequest.from_request(SendRequest.model_validate(
        {"from": "app@sender.test", "to": ["r0@many.test"], "subject": "many", "text": "Hi.\n"}))
    assert rig.store.create(meta, rcpts, req, now) is None
    records = _stream_records(rig, mid)
    assert [r["eventName"] for r in records] == ["INSERT"] * (n + 1)
    ddb = PartlyUnprocessed(rig.store.ddb, 40)
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock,
                         sleep=lambda s: None)
    rig.store, real = store, rig.store
    try:
        sink = _publish(rig, records)
    finally:
        rig.store = real
    assert ddb.calls >= 4  # 100 + 51 keys, 40 a call
    got = [(e.type, e.recipient, e.event_id, e.data["tags"]) for call in sink.calls for e in call]
    assert got == [("message.queued", f"r{i}@many.test", event_id(mid, i, "queued", 0), {"run": "r17"})
                   for i in range(n)]


@pytest.mark.parametrize("batch", [100, 1])
def test_a_scheduled_message_with_a_suppressed_recipient_gives_each_event_once(engine: Rig, batch: int) -> None:
    rig = engine
    mx = rig.mx("sched.test", 3)
    rig.suppressions.add(Suppression.new("gone@sched.test", rig.clock(), source="manual", reason="t", kind=None))
    at = rig.clock() + 3600
    mid = rig.send("ann@sched.test", "gone@sched.test", send_at=iso(at))
    rig.clock.advance(at - rig.clock() + 1)
    rig.run_jobs([QueueJob(message_id=mid, not_before=at)])
    assert [a for r in mx.received for a in r.rcpt_tos] == ["ann@sched.test"]
    records = _stream_records(rig, mid)
    first = [(e.type, e.recipient, e.event_id) for call in _publish(rig, records, batch=batch).calls for e in call]
    expected = [("message.scheduled", "ann@sched.test", event_id(mid, 0, "scheduled", 0)),
                ("message.suppressed", "gone@sched.test", event_id(mid, 1, "suppressed", 0)),
                ("message.queued", "ann@sched.test", event_id(mid, 0, "queued", 0)),
                ("message.delivered", "ann@sched.test", event_id(mid, 0, "delivered", 1))]
    assert first == expected
    again = [(e.type, e.recipient, e.event_id) for call in _publish(rig, records, batch=100).calls for e in call]
    assert again == expected  # a retried batch: the same ids (the log and webhooks keep each once)
