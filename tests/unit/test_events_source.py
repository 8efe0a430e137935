"""Issue 12: stream records -> events (events/source.py, store.recipient_change) and the events
function's service (events/service.py) and EventBridge sink (events/bus.py), with plain stream
records in Lambda's shape and in-memory sinks: no AWS."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from outpost.events import EVENT_TYPES
from outpost.events.bus import EventBus
from outpost.events.service import EventService
from outpost.events.source import event_for, event_id
from outpost.records import Recipient
from outpost.store import committed_message, recipient_change
from tests.conftest import load_event
from tests.fakes.events import FakeEventLog, RecordingSink

MID = "01m8ngwdx6psa79srjw73gvp2e"
_ser = TypeSerializer()
_seq = iter(range(1, 10**6))
CREATED = "2026-11-30T06:04:41.766Z"


def image(state: str, *, index: int = 0, attempts: int = 0, updated: str = "2026-11-30T06:04:42.276Z",
          **extra: Any) -> dict:
    """A recipient item as the store writes it, in DynamoDB JSON."""
    item = {"pk": f"MSG#{MID}", "sk": f"RCPT#{index:03d}", "index": index, "address": f"r{index}@accept.test",
            "state": state, "field": "to", "created_at": "2026-11-30T06:04:41.766Z", "updated_at": updated,
            "attempts": [{"at": updated, "outcome": "deferred", "mx": "mx.accept.test", "ip": "127.0.0.2",
                          "tls": {"version": "TLSv1.3", "verified": True}, "command": "RCPT", "code": 451 + n,
                          "status": "4.7.1", "text": f"try {n}"} for n in range(attempts)], **extra}
    return {k: _ser.serialize(v) for k, v in item.items()}


def meta_image(count: int, *, send_at: float | None = None, **extra: Any) -> dict:
    """A message's META item as the store writes it (its commit), in DynamoDB JSON."""
    item = {"pk": f"MSG#{MID}", "sk": "META", "message_id": MID, "from_": "a@shop.test", "from_domain": "shop.test",
            "subject": "s", "tags": {"k": "v"}, "tls": "opportunistic", "deliver_until": 1_900_000_000,
            "recipient_count": count, "size": 10, "created_at": CREATED, "spec_z": b"x\x9c\x03\x00",
            **({"send_at": int(send_at)} if send_at is not None else {}), **extra}
    return {k: _ser.serialize(v) for k, v in item.items()}


def commit(count: int = 1) -> dict:
    """The stream record of a create's commit: its META's INSERT (after its recipients')."""
    return record(None, meta_image(count), sk="META")


def reader(stored: Sequence[Recipient] = (), asked: list | None = None) -> Callable:
    """MessageStore.recipients_created as a fake: the batch's INSERT images (`known`), then
    `stored` (the table's recipients now) for the others."""
    def created(mid: str, count: int, known: Mapping[int, Recipient]) -> list[Recipient] | None:
        if asked is not None:
            asked.append((mid, count, sorted(known)))
        have = {r.index: r for r in stored if r.message_id == mid} | dict(known)
        return [have[i] for i in sorted(have) if i < count]

    return created


def record(old: dict | None, new: dict | None, *, sk: str = "RCPT#000", seq: int | None = None) -> dict:
    name = "INSERT" if old is None else ("REMOVE" if new is None else "MODIFY")
    ddb: dict[str, Any] = {"Keys": {"pk": {"S": f"MSG#{MID}"}, "sk": {"S": sk}},
                           "SequenceNumber": str(seq if seq is not None else next(_seq)).zfill(21),
                           "StreamViewType": "NEW_AND_OLD_IMAGES", "SizeBytes": 100,
                           "ApproximateCreationDateTime": 1796018640}
    if old is not None:
        ddb["OldImage"] = old
    if new is not None:
        ddb["NewImage"] = new
    return {"eventID": f"e{ddb['SequenceNumber']}", "eventName": name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1", "dynamodb": ddb,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"}


def one(old: dict | None, new: dict | None, tags: dict | None = None):
    change = recipient_change(record(old, new)["dynamodb"])
    assert change is not None
    return event_for(*change, tags=tags)


# ---- source -----------------------------------------------------------------------------------
def test_a_new_recipient_is_queued_with_the_message_tags():
    e = one(None, image("queued", updated="2026-11-30T06:04:41.766Z"), {"campaign": "reset"})
    assert e is not None and e.type == "message.queued"
    assert e.payload() == {"type": "message.queued", "timestamp": "2026-11-30T06:04:41.766Z", "data": {
        "message_id": MID, "recipient": "r0@accept.test", "state": "queued", "tags": {"campaign": "reset"}}}
    assert e.event_id == event_id(MID, 0, "queued", 0) and e.event_id.startswith("evt_")


def test_a_recipient_created_final_gives_its_state_not_queued():
    e = one(None, image("suppressed"))
    assert e is not None and e.type == "message.suppressed"


def test_a_state_change_carries_the_last_attempt_for_delivered_and_deferred():
    e = one(image("queued"), image("deferred", attempts=1))
    assert e is not None and e.type == "message.deferred"
    assert e.data["attempt"] == {"mx": "mx.accept.test", "ip": "127.0.0.2",
                                 "tls": {"version": "TLSv1.3", "verified": True},
                                 "code": 451, "status": "4.7.1", "text": "try 0"}
    d = one(image("deferred", attempts=1), image("delivered", attempts=2))
    assert d is not None and d.type == "message.delivered" and d.data["attempt"]["code"] == 452


def test_deferred_again_with_one_more_attempt_is_one_more_event_and_nothing_else_is():
    first = one(image("queued"), image("deferred", attempts=1))
    second = one(image("deferred", attempts=1), image("deferred", attempts=2, updated="2026-11-30T06:05:00.000Z"))
    assert first is not None and second is not None and second.type == "message.deferred"
    assert first.event_id != second.event_id and second.data["attempt"]["text"] == "try 1"
    # a lease, a hold's `waiting`, a due time: the same state and attempt count -> nothing
    assert one(image("queued"), image("queued", lease_until=1000000000)) is None
    assert one(image("deferred", attempts=1), image("deferred", attempts=1,
                                                    waiting={"reason": "paused", "provider": "x", "until": 1})) is None
    assert one(image("delivered", attempts=1), image("delivered", attempts=1, remote_id="Q1")) is None
    # deleted (TTL): not a state change
    assert one(image("delivered", attempts=1), None) is None


@pytest.mark.parametrize("state", ["bounced", "complained"])
def test_bounced_and_complained_carry_the_bounce(state):
    bounce = {"kind": "hard", "reason": "user_unknown", "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1",
              "source": "dsn", "reporting_mta": "mx.example"}
    e = one(image("delivered", attempts=1), image(state, attempts=1, bounce=bounce))
    assert e is not None and e.type == f"message.{state}" and "attempt" not in e.data
    assert e.data["bounce"] == {"kind": "hard", "reason": "user_unknown", "status": "5.1.1",
                                "diagnostic": "smtp; 550 5.1.1"}


def test_the_event_id_is_a_function_of_the_change_only():
    old, new = image("queued"), image("deferred", attempts=1)
    a, b = one(old, new), one(copy.deepcopy(old), copy.deepcopy(new), {"other": "tags"})
    assert a is not None and b is not None and a.event_id == b.event_id
    ids = {event_id(MID, i, s, n) for i in range(3) for s in ("queued", "deferred") for n in range(3)}
    assert len(ids) == 18


def test_items_that_are_not_recipients_are_no_change():
    meta = {"pk": {"S": f"MSG#{MID}"}, "sk": {"S": "META"}}
    assert recipient_change({"Keys": meta, "NewImage": meta}) is None
    evt = {"pk": {"S": "EVT#evt_1"}, "sk": {"S": "EVENT"}}
    assert recipient_change({"Keys": evt, "NewImage": evt}) is None


def test_the_sample_event_from_dynamodb_local_has_lambdas_shape_and_gives_one_event():
    sample = load_event("dynamodb_stream_recipient.json")
    (rec,) = sample["Records"]
    assert set(rec) == {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb",
                        "eventSourceARN"}
    assert rec["eventSource"] == "aws:dynamodb" and rec["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    change = recipient_change(rec["dynamodb"])
    assert change is not None
    e = event_for(*change)
    assert e is not None and e.type in EVENT_TYPES and e.type == f"message.{e.data['state']}"


# ---- the service: sinks in order, partial failures, no duplicates -------------------------------
def service(*sinks: Any, tags_calls: list | None = None, stored: Sequence[Recipient] = ()) -> EventService:
    def tags(ids):
        if tags_calls is not None:
            tags_calls.append(sorted(ids))
        return {MID: {"k": "v"}}

    return EventService(changes=recipient_change, tags=tags, sinks=list(sinks), commits=committed_message,
                        created=reader(stored))


def batch(*records: dict) -> dict:
    return {"Records": list(records)}


def path_records() -> list[dict]:
    q, d1, d2 = image("queued"), image("deferred", attempts=1), image("deferred", attempts=2)
    return [record(None, q), commit(), record(q, image("queued", lease_until=5)), record(q, d1), record(d1, d2),
            record(d2, image("delivered", attempts=3))]


def test_a_batch_goes_to_every_sink_in_order_log_first_with_tags_read_once():
    log, sink, calls = FakeEventLog(), RecordingSink(), []
    out = service(log, sink, tags_calls=calls).handle_stream_event(batch(*path_records()))
    assert out == {"batchItemFailures": []}
    assert [e.type for e in sink.calls[0]] == ["message.queued", "message.deferred", "message.deferred",
                                               "message.delivered"]
    assert len(sink.calls) == 1 and calls == [[MID]]
    assert sorted(log.stored) == sorted(sink.ids) and all(e.data["tags"] == {"k": "v"} for e in sink.calls[0])


def test_a_record_read_twice_and_a_batch_retried_store_each_event_once():
    log = FakeEventLog()
    svc = service(log)
    records = path_records()
    svc.handle_stream_event(batch(*records))
    svc.handle_stream_event(batch(*records[3:], records[3]))  # a retry, and one record twice
    assert len(log.stored) == 4 and log.puts == 4 + 4


def test_a_failing_sink_fails_only_the_records_whose_events_it_refused_and_a_retry_duplicates_nothing():
    log, sink = FakeEventLog(), RecordingSink()
    records = path_records()
    svc = service(log, sink)
    refused = svc.events_of(records)[2][1]  # the second deferred (records[4])
    sink.fail_ids = {refused.event_id}
    out = svc.handle_stream_event(batch(*records))
    failed = [f["itemIdentifier"] for f in out["batchItemFailures"]]
    assert failed == [records[4]["dynamodb"]["SequenceNumber"]]
    assert refused.event_id in log.stored and refused.event_id not in sink.ids  # log first
    sink.fail_ids = set()
    first = min(failed)
    retry = [r for r in records if r["dynamodb"]["SequenceNumber"] >= first]  # Lambda: from the first failure
    assert svc.handle_stream_event(batch(*retry)) == {"batchItemFailures": []}
    assert len(log.stored) == 4 and sorted(set(sink.ids)) == sorted(log.stored)


def test_every_record_failing_fails_the_invocation():
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    sink = RecordingSink()
    sink.failing = True
    q = record(None, image("queued"))
    with pytest.raises(BatchProcessingError):  # the commit, its recipient's INSERT in an earlier batch
        service(FakeEventLog(), sink, stored=[recipient_change(q["dynamodb"])[1]]).handle_stream_event(batch(commit()))


# ---- EventBridge ------------------------------------------------------------------------------
class RecordedEvents:
    """boto3's events client's put_events, recorded; fails the entries named in `fail` once each."""

    def __init__(self, fail: set[str] | None = None, always: bool = False) -> None:
        self.calls: list[list[dict]] = []
        self.fail, self.always = set(fail or ()), always

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's name
        self.calls.append(Entries)
        res = []
        for e in Entries:
            key = json.loads(e["Detail"])["data"]["recipient"]
            if self.always or key in self.fail:
                self.fail.discard(key)
                res.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                res.append({"EventId": "x"})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in res), "Entries": res}


def many(n: int) -> list:
    out = []
    for i in range(n):
        e = one(None, image("queued", index=i))
        out.append(e.replace(recipient=f"r{i}@accept.test"))
    return out


def test_eventbridge_gets_batches_of_ten_with_source_detail_type_and_the_payload():
    client = RecordedEvents()
    events = many(25)
    EventBus(client, "outpost-test", sleep=lambda s: None).publish(events)
    assert [len(c) for c in client.calls] == [10, 10, 5]
    first = client.calls[0][0]
    assert first["Source"] == "outpost" and first["DetailType"] == "message.queued"
    assert first["EventBusName"] == "outpost-test" and json.loads(first["Detail"]) == events[0].payload()


def test_eventbridge_entries_that_failed_are_put_again_and_only_they():
    from outpost.errors import EventPublishError

    client = RecordedEvents(fail={"r3@accept.test", "r7@accept.test"})
    EventBus(client, "b", sleep=lambda s: None).publish(many(10))
    assert [len(c) for c in client.calls] == [10, 2]
    assert {json.loads(e["Detail"])["data"]["recipient"] for e in client.calls[1]} == {"r3@accept.test",
                                                                                       "r7@accept.test"}
    with pytest.raises(EventPublishError):
        EventBus(RecordedEvents(always=True), "b", sleep=lambda s: None, attempts=3).publish(many(2))


def test_bootstrap_publishes_to_the_log_first_then_eventbridge_when_a_bus_is_named_then_webhooks(
        stacks_paused, monkeypatch):  # stacks_paused: the session stack runs nothing on this environment
    from outpost import bootstrap
    from outpost.store import EventLogStore
    from outpost.webhooks.sink import WebhookSink

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for bus, kinds in (("", [EventLogStore, WebhookSink]), ("outpost-prod", [EventLogStore, EventBus, WebhookSink])):
        monkeypatch.setenv("OUTPOST_EVENT_BUS", bus)
        bootstrap.reset()
        try:
            sinks = bootstrap.event_sinks()
            assert [type(s) for s in sinks] == kinds
            assert bus == "" or sinks[1].bus == bus
        finally:
            monkeypatch.delenv("OUTPOST_EVENT_BUS")
            bootstrap.reset()
