"""Creation events from the commit (s16f item 2), with plain stream records in Lambda's shape
and in-memory sinks: a META item's INSERT (store.committed_message) gives the creation event of
each recipient (events/source.as_created: the state it was created in, however it is now),
with the ids the recipients' INSERTs gave; a recipient's INSERT gives none; a sink failing
for the commit fails (and retries) its one record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outpost.events.service import EventService
from outpost.events.source import as_created, event_id
from outpost.models import RecipientState
from outpost.records import Recipient
from outpost.store import committed_message, recipient_change
from tests.fakes.events import FakeEventLog, RecordingSink
from tests.unit.test_events_source import CREATED, MID, image, meta_image, record


def rcpt(index: int, state: RecipientState, **kw: Any) -> Recipient:
    kw.setdefault("updated_at", CREATED)
    return Recipient(MID, index, f"r{index}@accept.test", state, created_at=CREATED, **kw)


def service(recipients: list[Recipient] | None, *sinks: Any, asked: list | None = None) -> EventService:
    def created(mid: str, count: int, known: Mapping[int, Recipient]) -> list[Recipient] | None:
        if asked is not None:
            asked.append((mid, count, sorted(known)))
        return recipients

    return EventService(changes=recipient_change, tags=lambda ids: {MID: {"k": "v"}}, sinks=list(sinks),
                        commits=committed_message, created=created)


def test_a_meta_insert_is_a_commit_and_nothing_else_is() -> None:
    m = committed_message(record(None, meta_image(2), sk="META")["dynamodb"])
    assert m is not None and m.message_id == MID and m.recipient_count == 2 and m.tags == {"k": "v"}
    assert committed_message(record(meta_image(2), meta_image(2, job_token="t"), sk="META")["dynamodb"]) is None
    assert committed_message(record(None, image("queued"))["dynamodb"]) is None
    once = record(None, meta_image(1), sk="META")["dynamodb"]
    once["Keys"]["pk"] = {"S": "ONCE#key"}  # an Idempotency-Key's claim has sk META too
    assert committed_message(once) is None


def test_the_creation_state_is_read_back_from_how_the_recipient_is_now() -> None:
    S = RecipientState
    assert as_created(rcpt(0, S.DELIVERED, attempts=()), False).state is S.QUEUED
    assert as_created(rcpt(0, S.QUEUED), True).state is S.SCHEDULED  # the message has a send_at
    assert as_created(rcpt(0, S.CANCELED), True).state is S.SCHEDULED
    assert as_created(rcpt(0, S.SUPPRESSED), False).state is S.SUPPRESSED  # at acceptance: no verdict
    at_send = rcpt(0, S.SUPPRESSED, last={"status": "5.7.1", "text": "address is on the suppression list"})
    assert as_created(at_send, False).state is S.QUEUED  # the sender's suppression records `last`
    back = as_created(rcpt(0, S.DEFERRED, updated_at="2026-11-30T07:00:00.000Z"), False)
    assert back.updated_at == CREATED and back.attempts == ()


def test_recipient_inserts_give_nothing_and_the_commit_gives_each_creation_event_in_order() -> None:
    sink, asked = RecordingSink(), []
    recipients = [rcpt(0, RecipientState.QUEUED), rcpt(1, RecipientState.SUPPRESSED)]
    records = [record(None, image("queued", index=0), sk="RCPT#000"),
               record(None, image("suppressed", index=1), sk="RCPT#001"),
               record(None, meta_image(2), sk="META"),
               record(image("queued"), image("delivered", attempts=1), sk="RCPT#000")]
    out = service(recipients, FakeEventLog(), sink, asked=asked).handle_stream_event({"Records": records})
    assert out == {"batchItemFailures": []} and asked == [(MID, 2, [0, 1])]  # both INSERTs given, not read
    got = [(e.type, e.recipient, e.event_id, e.data["tags"]) for e in sink.calls[0]]
    assert got[:2] == [("message.queued", "r0@accept.test", event_id(MID, 0, "queued", 0), {"k": "v"}),
                       ("message.suppressed", "r1@accept.test", event_id(MID, 1, "suppressed", 0), {"k": "v"})]
    assert [e.type for e in sink.calls[0][2:]] == ["message.delivered"]


def test_a_killed_create_and_a_discarded_one_publish_nothing() -> None:
    sink = RecordingSink()
    killed = [record(None, image("queued", index=i), sk=f"RCPT#{i:03d}") for i in range(3)]  # no META ever
    assert service([], sink).handle_stream_event({"Records": killed}) == {"batchItemFailures": []}
    discarded = [record(None, meta_image(1), sk="META")]  # its META gone when read: `created` is None
    assert service(None, sink).handle_stream_event({"Records": discarded}) == {"batchItemFailures": []}
    assert all(call == [] for call in sink.calls)


def test_a_sink_refusing_a_commits_event_fails_that_record_and_its_retry_publishes_all_of_them() -> None:
    log, sink = FakeEventLog(), RecordingSink()
    recipients = [rcpt(i, RecipientState.QUEUED) for i in range(3)]
    commit = record(None, meta_image(3), sk="META")
    other = record(image("queued", index=5), image("delivered", index=5, attempts=1), sk="RCPT#005")
    svc = service(recipients, log, sink)
    sink.fail_ids = {event_id(MID, 2, "queued", 0)}
    out = svc.handle_stream_event({"Records": [commit, other]})
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == [commit["dynamodb"]["SequenceNumber"]]
    sink.fail_ids = set()
    assert svc.handle_stream_event({"Records": [commit, other]}) == {"batchItemFailures": []}
    assert sorted(set(sink.ids)) == sorted(log.stored) and len(log.stored) == 4


def test_bootstrap_builds_the_service_with_the_commit_as_the_source() -> None:
    import inspect

    from outpost import bootstrap

    src = inspect.getsource(bootstrap.event_service)
    assert "commits=committed_message" in src and "created=message_store().recipients_created" in src
