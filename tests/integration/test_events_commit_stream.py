"""Creation events from the commit (s16f item 2), on DynamoDB Local's real stream (sender_rig).

A create is its recipients' puts, then its META put: the commit (store.MessageStore.create).
A create killed between them leaves recipients without a META until store.UNCOMMITTED_AGE,
and each recipient's INSERT used to publish `message.queued` (to the event log, EventBridge
and every webhook) for a message that answers 404 and never reaches a final state. Now the
META's INSERT publishes the creation event of each of its recipients, and a recipient's
INSERT none. The service here is built as bootstrap.event_service builds it; the stream's
records are fed in their real order, the batch boundaries wherever they fall."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from sender_rig import Rig
from test_store_crash_points import _stream_records
from test_store_create_crash import FailingDdb, Killed, _send_through

from outpost.events.service import EventService
from outpost.events.source import event_id
from outpost.models import QueueJob
from outpost.records import Suppression
from outpost.store import EventLogStore, MessageStore, committed_message, recipient_change
from outpost_local.dynamodb_local import ENGINE_LOCAL
from tests.fakes.events import RecordingSink

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(name="engine")
def engine_fixture(rig: Rig) -> Rig:
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason
    return rig


class CountingDdb:
    """The rig's DynamoDB client, recording the keys (sort keys) of every BatchGetItem and every
    other read call made through it: what the events function reads."""

    def __init__(self, real: Any) -> None:
        self.real, self.keys, self.other = real, [], []

    def batch_get_item(self, **kw: Any) -> Any:
        self.keys += [k["sk"]["S"] for req in kw["RequestItems"].values() for k in req["Keys"]]
        return self.real.batch_get_item(**kw)

    def __getattr__(self, name: str) -> Any:
        if name in ("get_item", "query", "scan"):
            self.other.append(name)
        return getattr(self.real, name)


def _service(rig: Rig, sink: RecordingSink, ddb: Any = None) -> EventService:
    """As bootstrap.event_service: the event log first, then (here) a recording sink; every read
    through `ddb` (the rig's client by default)."""
    ddb = ddb or rig.store.ddb
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    log = EventLogStore(ddb, rig.store.table, store)
    return EventService(changes=recipient_change, tags=log.tags_of, sinks=[log, sink],
                        commits=committed_message, created=store.recipients_created)


def _publish(rig: Rig, records: list[dict[str, Any]], *, batch: int = 100, ddb: Any = None) -> RecordingSink:
    sink = RecordingSink()
    svc = _service(rig, sink, ddb)
    for i in range(0, len(records), batch):
        assert svc.handle_stream_event({"Records": records[i:i + batch]}) == {"batchItemFailures": []}
    return sink


# All in one batch (the usual case): the recipients' INSERT images are used, and only the META is
# read (s17b: was the META and every recipient, ~n+1 read units); each record alone (META last):
# the recipients came in earlier batches, so they are read, as before.
@pytest.mark.parametrize(("batch", "reads"), [(100, ["META"]), (1, ["META", "RCPT#000", "RCPT#001", "RCPT#002"])])
def test_a_committed_create_publishes_each_creation_event_once_with_the_ids_it_had(engine: Rig, batch: int,
                                                                                   reads: list[str]) -> None:
    rig = engine
    mid = rig.send("q0@events.test", "q1@events.test", "q2@events.test")
    records = _stream_records(rig, mid)
    assert [r["eventName"] for r in records][:4] == ["INSERT"] * 4  # 3 recipients, then the META
    counting = CountingDdb(rig.store.ddb)
    sink = _publish(rig, records, batch=batch, ddb=counting)
    got = [(e.type, e.recipient, e.event_id) for call in sink.calls for e in call]
    assert got == [("message.queued", f"q{i}@events.test", event_id(mid, i, "queued", 0)) for i in range(3)]
    assert counting.keys == reads and counting.other == []


def test_a_create_killed_after_its_recipient_puts_publishes_nothing(engine: Rig) -> None:
    rig = engine
    killed = _send_through(rig, FailingDdb(rig.store.ddb, rig.store.table, 4, Killed()))  # killed at the META put
    records = _stream_records(rig, killed)
    assert [r["eventName"] for r in records] == ["INSERT"] * 3  # its recipients stay, without a META
    assert _publish(rig, records).calls == []


def test_recipients_moved_on_before_the_commit_is_read_keep_their_creation_events(engine: Rig) -> None:
    """The events function reads the recipients at the META's INSERT, which may be after the
    sender delivered them, and one suppressed at acceptance stays suppressed: the creation
    events are still `queued` (and `suppressed`), each once, then the delivery's."""
    rig = engine
    mx = rig.mx("events.test", 8)
    rig.suppressions.add(Suppression.new("gone@events.test", rig.clock(), source="manual", reason="test", kind=None))
    mid = rig.send("d0@events.test", "gone@events.test")
    rig.run_jobs([QueueJob(message_id=mid)])
    assert [a for r in mx.received for a in r.rcpt_tos] == ["d0@events.test"]
    sink = _publish(rig, _stream_records(rig, mid))
    got = [(e.type, e.recipient) for call in sink.calls for e in call]
    assert got.count(("message.queued", "d0@events.test")) == 1
    assert got.count(("message.suppressed", "gone@events.test")) == 1
    assert got[-1] == ("message.delivered", "d0@events.test")
    assert len({e.event_id for call in sink.calls for e in call}) == len(got)
