"""An attacker's pass (r18b) over this session's durability changes, on DynamoDB Local with the
real send API service, the real sender and a real MX over verified TLS (sender_rig):

- s17f: a committed message whose job SQS refused is accepted and marked overdue
  (store.mark_overdue). SQS can refuse a send_message that it in fact applied (the answer
  lost, the retries refused): the message then has a job AND a mark. The job's claim, not the
  mark, is what keeps it from being sent twice; the mark moves a leased recipient's due time
  too (claim leaves due_at alone), and the sweeper must not queue it while the lease is live.
- r17b: the write id (`wid`) each recipient write carries: items written before it (none) are
  accepted by the condition, and it never reaches a record, an API answer or an event.
- s17d: a scheduled job's hop asks `any_open`, page by page: the last recipient open is found."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from sender_rig import SENDER_DOMAIN, T0, Rig, engine_fixture  # noqa: F401 - the engine fixture
from test_store_crash_points import _stream_records

from outpost.api.service import QueryService
from outpost.clock import iso
from outpost.events.service import EventService
from outpost.models import MAX_RECIPIENTS, QueueJob, SendRequest
from outpost.store import UNCOMMITTED_AGE, EventLogStore, MessageStore, committed_message, recipient_change
from outpost.sweeper import SWEEP_GRACE, Sweeper
from outpost_local.mx import Behaviour

pytestmark = pytest.mark.timeout(180)


class HoldData(Behaviour):
    """The MX holds each message's end of data until `go` is set; `inside` is set on arrival."""

    def __init__(self) -> None:
        self.inside, self.go = threading.Event(), threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | None:
        self.inside.set()
        while not self.go.is_set():
            await asyncio.sleep(0.02)
        return None


class AppliedButRefused:
    """SQS's SendMessage applied, then answered with an error (its answer lost and the retries
    refused): the job is on the queue, the API sees a failure. `then` runs before the error."""

    def __init__(self, real: Any, then: Any) -> None:
        self.real, self.then, self.jobs = real, then, []

    def send(self, job: QueueJob, delay: float = 0) -> None:
        self.real.send(job, delay)
        self.jobs.append(job)
        self.then(job)
        raise ConnectionError("SendMessage: the answer was lost")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _jobs_for(rig: Rig, mid: str, n: int | None = None, since: int = 0) -> list[QueueJob]:
    """The jobs queued for this message from the `since`th on (the table is the module's:
    others' may be swept too)."""
    jobs = [j for j, _ in rig.queue.sent[since:] if j.message_id == mid]
    assert n is None or len(jobs) == n, jobs
    return jobs


def _raw(rig: Rig, mid: str, index: int) -> dict:
    return rig.store.ddb.get_item(TableName=rig.store.table, ConsistentRead=True, Key={
        "pk": {"S": f"MSG#{mid}"}, "sk": {"S": f"RCPT#{index:03d}"}})["Item"]


def test_a_job_sqs_applied_but_refused_and_the_overdue_mark_send_each_recipient_once(engine: Rig) -> None:
    """The API's job is queued although SQS answered an error, and its sender is inside the SMTP
    transaction (every recipient leased) when the API marks the message overdue: the mark moves
    recipient 0's due time under the live lease, the sweeper leaves it (leased), the job
    delivers each recipient once, and neither a duplicate job nor the sweeper after the grace
    sends anything again."""
    rig = engine
    hold = HoldData()
    mx = rig.mx("dup.test", 2, hold)
    ran: list[dict] = []

    def run_job(job: QueueJob) -> None:
        t = threading.Thread(target=lambda: ran.append(rig.run_jobs([job])), daemon=True)
        t.start()
        assert hold.inside.wait(60), "the job never reached DATA"
        threads.append(t)

    threads: list[threading.Thread] = []
    rig.api.queue = AppliedButRefused(rig.queue, run_job)  # type: ignore[assignment]
    mid = rig.send("a@dup.test", "b@dup.test", "c@dup.test")  # 202: accepted all the same
    r0 = _raw(rig, mid, 0)
    assert float(r0["lease_until"]["N"]) > rig.clock(), "the job holds recipient 0"
    assert float(r0["due_at"]["N"]) == T0 - SWEEP_GRACE, "marked under the lease (claim leaves due_at)"
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock)
    rig.clock.advance(1)
    api_jobs = len(rig.queue.sent)  # the API's, which SQS took
    sweeper.sweep()
    assert _jobs_for(rig, mid, since=api_jobs) == []  # leased: left alone
    hold.go.set()
    for t in threads:
        t.join(60)
    assert ran and [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 3
    [job] = rig.api.queue.jobs  # type: ignore[attr-defined]
    rig.run_jobs([job])  # SQS's duplicate of the same job
    rig.clock.advance(SWEEP_GRACE + 600)
    sweeper.sweep()
    assert _jobs_for(rig, mid, since=api_jobs) == []
    assert sorted(a for m in mx.received for a in m.rcpt_tos) == ["a@dup.test", "b@dup.test", "c@dup.test"]


def test_a_job_that_finished_before_the_mark_leaves_nothing_to_mark(engine: Rig) -> None:
    """SQS applied the job and its sender delivered everything before the API's mark: the mark
    finds no open recipient (None; each refusal reads back a wid that is not its own), the
    message is delivered once, and the sweeper after the grace finds nothing."""
    rig = engine
    mx = rig.mx("fast.test", 3)
    marks: list[int | None] = []
    real_mark = rig.store.mark_overdue

    def mark(*a: Any, **kw: Any) -> int | None:
        marks.append(real_mark(*a, **kw))
        return marks[-1]

    rig.store.mark_overdue = mark  # type: ignore[method-assign]
    rig.api.queue = AppliedButRefused(rig.queue, lambda job: rig.run_jobs([job]))  # type: ignore[assignment]
    mid = rig.send("a@fast.test", "b@fast.test")
    assert marks == [None] and [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 2
    rig.clock.advance(SWEEP_GRACE + 600)
    api_jobs = len(rig.queue.sent)
    Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock).sweep()
    assert _jobs_for(rig, mid, since=api_jobs) == []
    assert sorted(a for m in mx.received for a in m.rcpt_tos) == ["a@fast.test", "b@fast.test"]


def test_the_write_id_accepts_items_without_one_and_never_leaves_the_store(engine: Rig) -> None:
    """A recipient as stored before r17b (no `wid`, as `create` still writes it) is claimed and
    finished; after writes that store a `wid`, neither the records, the API's message answer
    nor the stream's events carry it."""
    rig = engine
    rig.mx("idw.test", 4)
    mid = rig.send("a@idw.test", "b@idw.test")
    assert "wid" not in _raw(rig, mid, 0) and "wid" not in _raw(rig, mid, 1)
    assert rig.store.claim(mid, 1, rig.clock(), 30)  # the condition accepts an item without it
    assert "wid" in _raw(rig, mid, 1)
    rig.store.release(mid, 1)
    rig.run(mid, token=None)
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 2
    assert all("wid" in _raw(rig, mid, i) for i in (0, 1))
    assert not any("wid" in r for r in rig.rcpts(mid))
    answer = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock).message(mid)
    assert "wid" not in repr(answer)
    log = EventLogStore(rig.store.ddb, rig.store.table, rig.store)
    svc = EventService(changes=recipient_change, tags=log.tags_of, sinks=[], commits=committed_message,
                       created=rig.store.recipients_created)
    events = [e for _, e in svc.events_of(_stream_records(rig, mid))]
    assert sorted(e.type for e in events) == ["message.delivered"] * 2 + ["message.queued"] * 2
    assert "wid" not in repr([e.as_dict() for e in events])


def test_a_hop_finds_the_last_recipient_open_page_by_page(engine: Rig) -> None:
    """A scheduled message of MAX_RECIPIENTS (50; 500 cannot be sent: models.py refuses more)
    whose first 49 are canceled: any_open reads on, page by page (8 and 3 items a query), to
    the last one (True); that one canceled too: False, and the hop's job ends, queuing nothing."""
    rig = engine
    mid = rig.send(*[f"r{i}@many.test" for i in range(MAX_RECIPIENTS)], send_at=iso(T0 + 3 * 3600))
    for i in range(MAX_RECIPIENTS - 1):
        assert rig.store.cancel(mid, i, rig.clock())
    assert rig.store.any_open(mid) is True and rig.store.any_open(mid, page=3) is True
    assert rig.store.cancel(mid, MAX_RECIPIENTS - 1, rig.clock())
    assert rig.store.any_open(mid) is False and rig.store.any_open(mid, page=3) is False
    [job] = [j for j, _ in rig.queue.sent if j.message_id == mid]
    before = len(rig.queue.sent)
    rig.run_jobs([job])
    assert len(rig.queue.sent) == before  # no hop queued: nothing left open


class RefusingSqs:
    """The queue's SQS client: SendMessage refused; SendMessageBatch applied for the first
    `batches_ok` calls, then refused (a queue that stops accepting in the middle of a batch)."""

    def __init__(self, real: Any, batches_ok: int = 0) -> None:
        self.real, self.batches_ok, self.batches = real, batches_ok, 0

    def send_message(self, **kw: Any) -> Any:
        raise ConnectionError("SendMessage refused")

    def send_message_batch(self, **kw: Any) -> Any:
        self.batches += 1
        if self.batches > self.batches_ok:
            raise ConnectionError("SendMessageBatch refused")
        return self.real.send_message_batch(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class MarkFails:
    """The store's DynamoDB client: the overdue mark's UpdateItem (SET due_at only) fails."""

    def __init__(self, real: Any) -> None:
        self.real, self.failed = real, 0

    def update_item(self, **kw: Any) -> Any:
        if kw.get("UpdateExpression", "").endswith("due_at = :n") and ":d" in kw.get("ExpressionAttributeValues", {}):
            self.failed += 1
            raise ConnectionError("UpdateItem: DynamoDB unreachable")
        return self.real.update_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_sqs_refusing_then_the_mark_failing_is_still_accepted_and_delivered_after_the_grace(engine: Rig) -> None:
    """SQS refuses the job and DynamoDB then fails the overdue mark: the client still gets its
    202 (the message is committed), nothing is marked, and the sweeper's first run past
    SWEEP_GRACE queues the job that delivers it."""
    rig = engine
    mx = rig.mx("late.test", 5)
    sqs, ddb = rig.queue.sqs, rig.store.ddb
    rig.queue.sqs, rig.store.ddb = RefusingSqs(sqs), MarkFails(ddb)  # type: ignore[assignment]
    try:
        out = rig.api.send_one(SendRequest.model_validate({
            "from": f"App <app@{SENDER_DOMAIN}>", "to": ["a@late.test"], "subject": "s", "text": "t\n"}))
        assert rig.store.ddb.failed == 1  # type: ignore[attr-defined]
    finally:
        rig.queue.sqs, rig.store.ddb = sqs, ddb
    mid = str(out["id"])
    assert [r["status"] for r in out["recipients"]] == ["queued"]
    assert float(_raw(rig, mid, 0)["due_at"]["N"]) == T0  # not marked
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock)
    rig.clock.advance(SWEEP_GRACE - 1)
    sweeper.sweep()
    assert _jobs_for(rig, mid) == []
    rig.clock.advance(2)
    sweeper.sweep()
    rig.run_jobs(_jobs_for(rig, mid, 1))
    assert rig.rcpt(mid)["state"] == "delivered" and len(mx.received) == 1


def test_a_batch_whose_second_chunk_sqs_refuses_is_swept_at_small_per_shard_limits(engine: Rig) -> None:
    """25 messages; SQS takes the first SendMessageBatch (10 jobs) and refuses the rest: all 25
    are 202, exactly the 15 unqueued ones are marked (one recipient each), and a sweeper
    reading one recipient per shard a run queues each of the 15 exactly once over its runs
    (the marked are the oldest due), none of the 10 queued ones."""
    rig = engine
    rig.mx("chunk.test", 6)
    body = {"from": f"App <app@{SENDER_DOMAIN}>", "subject": "s", "text": "t\n"}
    sqs = rig.queue.sqs
    rig.queue.sqs = RefusingSqs(sqs, batches_ok=1)  # type: ignore[assignment]
    try:
        answer, replayed = rig.api.send_batch([dict(body, to=[f"m{i}a@chunk.test", f"m{i}b@chunk.test"])
                                               for i in range(25)])
    finally:
        rig.queue.sqs = sqs
    assert not replayed and answer["accepted"] == 25
    ids = [r["id"] for r in answer["results"]]
    marked = {m for m in ids if float(_raw(rig, m, 0)["due_at"]["N"]) == T0 - SWEEP_GRACE}
    assert marked == set(ids[10:]) and all(float(_raw(rig, m, 1)["due_at"]["N"]) == T0 for m in ids)
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock, limit=1)
    for _ in range(100):  # (the module's other messages may be swept beside them)
        rig.clock.advance(1)
        if not sweeper.sweep().messages:
            break
    swept = [j.message_id for j, _ in rig.queue.sent if j.message_id in ids]
    assert sorted(swept) == sorted(marked), swept


class MetaAppliedAnswerLost:
    """The store's DynamoDB client: the META's PutItem is applied, and then the call fails as
    botocore fails it when the answer to every one of its tries was lost (read timeouts)."""

    def __init__(self, real: Any) -> None:
        self.real, self.lost = real, 0

    def put_item(self, **kw: Any) -> Any:
        out = self.real.put_item(**kw)
        if kw["Item"].get("sk", {}).get("S") == "META" and str(kw["Item"]["pk"]["S"]).startswith("MSG#"):
            self.lost += 1
            raise ReadTimeoutError(endpoint_url="http://dynamodb.local")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_meta_put_applied_whose_answers_were_lost_is_a_committed_message(engine: Rig) -> None:
    """The META put (the commit point) is applied but the call raises: the message is
    committed. Before r18b the create took its recipients back and answered 503, leaving a
    META with no recipients: a message the events function announced (message.queued from the
    META's INSERT) that never ended, and which an Idempotency-Key's retry found through its
    claim and answered 202 with nothing to deliver. Now the create reads the META back: 202,
    every recipient kept, the job queued and each recipient delivered once."""
    rig = engine
    mx = rig.mx("commit.test", 7)
    ddb = rig.store.ddb
    rig.store.ddb = lossy = MetaAppliedAnswerLost(ddb)  # type: ignore[assignment]
    try:
        out = rig.api.send_one(SendRequest.model_validate({
            "from": f"App <app@{SENDER_DOMAIN}>", "to": ["a@commit.test", "b@commit.test"],
            "subject": "s", "text": "t\n"}))
    finally:
        rig.store.ddb = ddb
    assert lossy.lost == 1
    mid = str(out["id"])
    assert [r["status"] for r in out["recipients"]] == ["queued", "queued"]
    assert [r["state"] for r in rig.rcpts(mid)] == ["queued", "queued"]
    [(job, _)] = rig.queue.sent
    rig.run_jobs([job])
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 2
    assert sorted(a for m in mx.received for a in m.rcpt_tos) == ["a@commit.test", "b@commit.test"]


class MetaRefusedUnreadable:
    """The store's DynamoDB client: the META's PutItem fails unapplied, and so does the read
    that would tell whether it was applied (DynamoDB unreachable)."""

    def __init__(self, real: Any) -> None:
        self.real, self.down = real, False

    def put_item(self, **kw: Any) -> Any:
        if kw["Item"].get("sk", {}).get("S") == "META" and str(kw["Item"]["pk"]["S"]).startswith("MSG#"):
            self.down = True
            raise ReadTimeoutError(endpoint_url="http://dynamodb.local")
        return self.real.put_item(**kw)

    def get_item(self, **kw: Any) -> Any:
        if self.down:
            raise ReadTimeoutError(endpoint_url="http://dynamodb.local")
        return self.real.get_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_meta_put_failed_whose_outcome_cannot_be_read_leaves_its_recipients_for_load(engine: Rig) -> None:
    """The META put fails and the read-back fails too: the create's error stands (503 to the
    client), its recipients are left (it may have committed: not taken from under a META),
    nothing sends them (no META: the sweeper's job loads no message), and `load` deletes them
    once they are older than UNCOMMITTED_AGE."""
    rig = engine
    mx = rig.mx("unknown.test", 8)
    ddb = rig.store.ddb
    rig.store.ddb = MetaRefusedUnreadable(ddb)  # type: ignore[assignment]
    try:
        with pytest.raises(ReadTimeoutError):
            rig.api.send_one(SendRequest.model_validate({
                "from": f"App <app@{SENDER_DOMAIN}>", "to": ["a@unknown.test"], "subject": "s", "text": "t\n"}))
    finally:
        rig.store.ddb = ddb
    assert rig.queue.sent == []
    left = ddb.scan(TableName=rig.store.table, FilterExpression="begins_with(sk, :r) AND contains(address, :a)",
                    ExpressionAttributeValues={":r": {"S": "RCPT#"}, ":a": {"S": "@unknown.test"}})["Items"]
    [item] = left
    mid = item["pk"]["S"].removeprefix("MSG#")
    rig.clock.advance(SWEEP_GRACE + 1)
    Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock).sweep()  # (the module's other messages too)
    rig.run_jobs(_jobs_for(rig, mid, 1))
    assert mx.received == [] and rig.store.load(mid) is None
    rig.clock.advance(UNCOMMITTED_AGE)
    assert rig.store.load(mid) is None
    assert "Item" not in ddb.get_item(TableName=rig.store.table, Key={"pk": {"S": f"MSG#{mid}"},
                                                                      "sk": {"S": "RCPT#000"}})


class ClaimLostThenMarked:
    """The store's DynamoDB client: the first claim is applied, then (its answer lost; botocore
    waits out its 10 s read timeout) another writer moves the recipient's due time, as the API's
    overdue mark or the sweeper's postpone_due do without looking at leases, storing its own
    write id (before r18b); then botocore's retry of the claim, refused by its first try's lease."""

    def __init__(self, real: Any, table: str) -> None:
        self.real, self.table, self.replayed, self.moved = real, table, 0, False

    def update_item(self, **kw: Any) -> Any:
        if not self.replayed and kw["UpdateExpression"].startswith("SET #wid = :wid, lease_until"):
            self.replayed += 1
            self.real.update_item(**kw)  # applied; its answer never arrives
            mid, index = kw["Key"]["pk"]["S"].removeprefix("MSG#"), int(kw["Key"]["sk"]["S"].removeprefix("RCPT#"))
            self.moved = MessageStore(self.real, self.table, None, "").postpone_due(mid, index, T0, T0 + 1)
        return self.real.update_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_claim_whose_answer_was_lost_and_whose_wid_another_writer_replaced_still_sends_now(engine: Rig) -> None:
    """r17b's read-back finds another writer's `wid` when a due-time write (the overdue mark,
    the sweeper's postpone_due: neither checks the lease) landed between the claim and its
    refused retry: before r18b the claim was reported refused although applied, and the
    recipient sat leased with no sender until its lease ended plus the sweeper's grace. A
    due-time move now stores no `wid`: the claim finds its own; sent now, once."""
    rig = engine
    mx = rig.mx("lease.test", 9)
    mid = rig.send("a@lease.test")
    real = rig.store.ddb
    rig.store.ddb = lossy = ClaimLostThenMarked(real, rig.store.table)  # type: ignore[assignment]
    try:
        rig.run(mid, token=None)
    finally:
        rig.store.ddb = real
    assert lossy.replayed == 1 and lossy.moved
    assert rig.rcpt(mid)["state"] == "delivered"
    assert [m.rcpt_tos for m in mx.received] == [["a@lease.test"]]
