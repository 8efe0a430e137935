"""An attacker's pass over the store's durability (s16e): crash and failure points after the
create, against DynamoDB Local with the real send API service, the real sender, the sweeper and
a real MX (sender_rig).

The promise checked: whatever the API answers is true. A 202 means every recipient reaches a
final state and the MX receives the message exactly once (the sweeper's job sends it when the
API's job was never queued: s17f, a committed message is never taken back); a 503 means nothing
is ever sent, so the client's retry is the only copy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sender_rig import Rig

from outpost.api.service import SendService
from outpost.clock import iso
from outpost.delivery.service import DeliveryService
from outpost.events.service import EventService
from outpost.models import QueueJob, SendRequest
from outpost.store import (
    UNCOMMITTED_AGE,
    EventLogStore,
    JobQueue,
    MessageStore,
    committed_message,
    recipient_change,
)
from outpost.sweeper import SWEEP_GRACE, Sweeper
from outpost_local.mx import Behaviour

pytestmark = pytest.mark.timeout(180)


class RefusingQueue:
    """SQS refusing the API's job (the enqueue after the create fails)."""

    def send(self, job: QueueJob, delay: float = 0) -> None:
        raise RuntimeError("SQS is unavailable")

    def send_many(self, jobs: list[QueueJob]) -> list[str]:
        raise RuntimeError("SQS is unavailable")


def _api(rig: Rig, ddb: Any) -> SendService:
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock,
                         sleep=lambda s: None)
    return SendService(store=store, suppressions=rig.suppressions, queue=RefusingQueue(),  # type: ignore[arg-type]
                       domains=rig.api.domains, clock=rig.clock)


def _request(to: list[str]) -> SendRequest:
    return SendRequest.model_validate({"from": "App <app@sender.test>", "to": to, "subject": "take back",
                                       "text": "Hello.\n"})


def _sweep_and_deliver(rig: Rig, rounds: int = 2) -> None:
    """What runs after the API answered: the sweeper past its grace (twice, as after
    UNCOMMITTED_AGE), each job it queues run by the real sender."""
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock)
    for _ in range(rounds):
        rig.clock.advance(max(SWEEP_GRACE, UNCOMMITTED_AGE) + 1)
        before = len(rig.queue.sent)
        sweeper.sweep()
        jobs = [job for job, _ in rig.queue.sent[before:]]
        if jobs:
            rig.run_jobs(jobs)


def _answer(api: SendService, to: list[str]) -> tuple[int, str | None]:
    try:
        return 202, str(api.send_one(_request(to))["id"])
    except Exception:  # noqa: BLE001 - the route answers any other failure 503
        return 503, None


# ---- the claim without moving due_at (issue 15 item 4), start_scheduled and cancel -------------------


class SweepAndRedeliverDuringData(Behaviour):
    """While the first transaction's DATA is in progress (its lease running): a sweeper whose
    clock runs `skew` seconds ahead sweeps, and a second sender container runs every job it
    queued plus a redelivery of the API's job, in their own thread and event loop. What they
    delivered shows at the same MX."""

    def __init__(self, rig: Rig, other: DeliveryService, job: QueueJob, skew: float) -> None:
        self.rig, self.other, self.job, self.skew, self.done = rig, other, job, skew, False
        self.overdue = 0

    def _meanwhile(self) -> None:
        rig = self.rig
        skewed = Sweeper(store=rig.store, queue=rig.queue, clock=lambda: rig.clock() + self.skew)
        before = len(rig.queue.sent)
        self.overdue = skewed.sweep().overdue
        jobs = [j for j, _ in rig.queue.sent[before:]] + [self.job]
        self.other.handle_sqs_event({"Records": [{"messageId": f"x{i}", "body": j.model_dump_json(exclude_none=True)}
                                                 for i, j in enumerate(jobs)]}, lambda: 300_000)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | None:
        if not self.done:
            self.done = True
            await asyncio.to_thread(self._meanwhile)
        return None


def test_a_skewed_sweeper_and_a_redelivery_during_a_transaction_send_nothing_more(engine: Rig) -> None:
    """The claim leaves due_at at the creation time, so the due index says "overdue" for a
    recipient in a transaction; a sweeper 2,000 s ahead of the sender's clock (past the grace
    and past the lease) queues a rescue job, and a redelivered copy of the API's job runs in
    another container at the same time. Only the claim decides (its condition is read on the
    claimer's clock, in the store): the MX gets one copy. (Checked: with pick_due's lease
    check and the claim's lease condition both removed, the MX gets two; either alone holds.)"""
    rig = engine
    mid = rig.send("one@skew.test")
    api_job = rig.queue.sent[-1][0]
    first = rig.service
    other = rig.build()
    rig.service = first
    meanwhile = SweepAndRedeliverDuringData(rig, other, api_job, skew=2000.0)
    mx = rig.mx("skew.test", 3, meanwhile)
    rig.run_jobs([api_job])
    assert meanwhile.done and meanwhile.overdue == 1  # the skewed sweeper did queue a rescue
    assert [r.rcpt_tos for r in mx.received] == [["one@skew.test"]]
    assert rig.rcpt(mid)["state"] == "delivered"


def test_a_run_killed_after_its_claim_is_sent_once_when_the_lease_is_over(engine: Rig) -> None:
    """Killed after the claim (the lease written, due_at left at creation): the sweeper leaves
    it while the lease runs, a redelivery meanwhile sends nothing, and after the lease the
    rescue sends it once."""
    rig = engine
    mx = rig.mx("claim.test", 4)
    mid = rig.send("a@claim.test", "b@claim.test")
    api_job = rig.queue.sent[-1][0]
    lease = 930.0  # the API function's longest invocation plus LEASE_MARGIN
    assert rig.store.claim(mid, 0, rig.clock(), lease) and rig.store.claim(mid, 1, rig.clock(), lease)
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock)
    rig.clock.advance(SWEEP_GRACE + 1)
    assert sweeper.sweep().overdue == 0  # the lease is still running
    rig.run_jobs([api_job])  # SQS redelivers the killed run's job: leased elsewhere, nothing sent
    assert mx.received == []
    rig.clock.advance(lease)
    rig.run_jobs([j for j, _ in rig.queue.sent if j.message_id == mid][-1:])
    _sweep_and_deliver(rig)
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == ["a@claim.test", "b@claim.test"]
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered", "delivered"]


def test_a_run_killed_after_starting_scheduled_recipients_sends_them_once(engine: Rig) -> None:
    rig = engine
    mx = rig.mx("sched.test", 5)
    at = rig.clock() + 120
    mid = rig.send("a@sched.test", "b@sched.test", send_at=iso(at))
    job = rig.queue.sent[-1][0]
    rig.clock.advance(121)
    assert rig.store.start_scheduled(mid, 0, rig.clock())  # killed here: one started, no claim
    rig.run_jobs([job])  # redelivered
    rig.run_jobs([job])  # and again
    _sweep_and_deliver(rig)
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == ["a@sched.test", "b@sched.test"]
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered", "delivered"]


def test_a_cancel_killed_part_way_then_retried_cancels_all_and_sends_nothing(engine: Rig) -> None:
    rig = engine
    mx = rig.mx("cancel.test", 6)
    at = rig.clock() + 120
    mid = rig.send("a@cancel.test", "b@cancel.test", "c@cancel.test", send_at=iso(at))
    job = rig.queue.sent[-1][0]
    assert rig.store.cancel(mid, 1, rig.clock())  # killed after its first write
    out = rig.api.cancel(mid)
    assert [r["status"] for r in out["recipients"]] == ["canceled"] * 3
    rig.clock.advance(121)
    rig.run_jobs([job])
    _sweep_and_deliver(rig)
    assert mx.received == []
    assert [r["state"] for r in rig.rcpts(mid)] == ["canceled"] * 3


# ---- a batch whose enqueue fails part way ---------------------------------------------------------------


class SqsFailingAtCall:
    """The rig's SQS client; the `at`th SendMessageBatch raises (SQS throttling past botocore's
    retries), after `meanwhile` ran the jobs already queued, as a sender picks them up within
    its batching window while the API is still queueing the rest."""

    def __init__(self, real: Any, at: int, meanwhile: Any) -> None:
        self.real, self.at, self.meanwhile, self.calls = real, at, meanwhile, 0
        self.queued: list[QueueJob] = []

    def send_message_batch(self, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            self.meanwhile(list(self.queued))
            raise RuntimeError("ThrottlingException: too many requests")
        r = self.real.send_message_batch(**kw)
        self.queued += [QueueJob.model_validate_json(e["MessageBody"]) for e in kw["Entries"]]
        return r

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_batch_whose_enqueue_fails_part_way_accepts_every_message_and_sends_each_once(engine: Rig) -> None:
    """15 messages are two SendMessageBatch calls; the second fails. The first ten jobs are
    on the queue, and a sender runs them at once. Before s16e, send_many raised and the API
    took back all 15 (503 each), deleting ten messages the MX had already received; before
    s17f, the last five were taken back (503) after their META's INSERT (message.queued) was
    in the stream. Now all 15 are accepted: the five not queued are marked overdue, so the
    sweeper's next run (not one after SWEEP_GRACE) queues them, and each is delivered once."""
    rig = engine
    mx = rig.mx("batch.test", 7)
    sqs = SqsFailingAtCall(rig.queue.sqs, 2, lambda jobs: rig.run_jobs(jobs))
    api = SendService(store=rig.store, suppressions=rig.suppressions, queue=JobQueue(sqs, rig.queue.url),
                      domains=rig.api.domains, clock=rig.clock)
    to = [f"b{i}@batch.test" for i in range(15)]
    out, _ = api.send_batch([{"from": "app@sender.test", "to": a, "subject": "batch", "text": "Hi.\n"} for a in to])
    assert sqs.calls == 2 and len(sqs.queued) == 10
    assert [r["status"] for r in out["results"]] == [202] * 15
    assert len(_sweep_next_run(rig)) == 5  # the five not queued, at the next run
    got = [a for r in mx.received for a in r.rcpt_tos]
    for a, r in zip(to, out["results"], strict=True):
        assert got.count(a) == 1, (a, r)  # accepted: delivered exactly once
        assert rig.rcpt(r["id"])["state"] == "delivered"
    _sweep_and_deliver(rig)  # and nothing more, ever
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == sorted(to)


def _sweep_next_run(rig: Rig) -> list[QueueJob]:
    """The sweeper's next scheduled run (a second later; its grace as deployed), each job it
    queues run by the real sender: the jobs."""
    rig.clock.advance(1)
    before = len(rig.queue.sent)
    Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock).sweep()
    jobs = [job for job, _ in rig.queue.sent[before:]]
    if jobs:
        rig.run_jobs(jobs)
    return jobs


def test_a_scheduled_send_whose_hop_is_refused_is_started_after_send_at_by_the_sweeper_once(engine: Rig) -> None:
    """s17f: a scheduled message whose hop job SQS refused is accepted (scheduled); the sweeper
    queues nothing before send_at, and its first run after send_at queues a job that the real
    sender runs: the recipients are started (store.start_scheduled) and delivered once."""
    rig = engine
    mx = rig.mx("later.test", 2)
    to = ["s0@later.test", "s1@later.test"]
    send_at = rig.clock() + 3600
    out = _api(rig, rig.store.ddb).send_one(SendRequest.model_validate({
        "from": "App <app@sender.test>", "to": to, "subject": "later", "text": "Hello.\n", "send_at": iso(send_at)}))
    assert [r["status"] for r in out["recipients"]] == ["scheduled"] * 2
    rig.clock.advance(3600 - 2)
    assert _sweep_next_run(rig) == [] and mx.received == []  # a second before send_at: nothing
    rig.clock.advance(1)
    assert [j.message_id for j in _sweep_next_run(rig)] == [out["id"]]  # a second after it
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == to
    assert {rig.rcpt(out["id"], i)["state"] for i in range(2)} == {"delivered"}
    _sweep_and_deliver(rig)
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == to  # once


# ---- events of a create that never committed ------------------------------------------------------------


def _stream_records(rig: Rig, mid: str) -> list[dict]:
    """MessagesTable's real stream (DynamoDB Local), this message's records, in order."""
    import boto3

    arn = rig.store.ddb.describe_table(TableName=rig.store.table)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams", endpoint_url=rig.aws.dynamodb_endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    out: list[dict] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            out += [r for r in page["Records"] if f"MSG#{mid}" in str(r["dynamodb"]["Keys"])]
            it = page.get("NextShardIterator") if page["Records"] else None
    return out


def _events(rig: Rig, records: list[dict]) -> list[tuple[str, str]]:
    """What the events function publishes for these records, built as bootstrap builds it."""
    log = EventLogStore(rig.store.ddb, rig.store.table, rig.store)
    svc = EventService(changes=recipient_change, tags=log.tags_of, sinks=[], commits=committed_message,
                       created=rig.store.recipients_created)
    return [(e.type, e.recipient) for _, e in svc.events_of(records)]


def test_a_create_taken_back_publishes_no_event(engine: Rig) -> None:
    """The META put fails (throttled): the API answers 503 and the create takes its
    recipients back. Before s16e the events function still published `message.queued` for
    each (to the event log, EventBridge and every webhook) for a message that 404s."""
    from test_store_create_crash import FailingDdb, _send_through, _throttled

    rig = engine
    mid = _send_through(rig, FailingDdb(rig.store.ddb, rig.store.table, 4, _throttled()))
    records = _stream_records(rig, mid)
    assert [r["eventName"] for r in records] == ["INSERT"] * 3 + ["REMOVE"] * 3
    assert _events(rig, records) == []


def test_a_send_whose_job_is_refused_publishes_queued_once_and_the_next_sweep_delivers_it_once(engine: Rig) -> None:
    """s17f: the API's job is refused after the commit. Before, the API took the message back
    (503, then 404 for its id) after the META's INSERT was in the stream: message.queued was
    published for a message that never reached a final state. Now: 202; the real stream gives
    message.queued once per recipient; the sweeper's next run queues its job and the real
    sender delivers it to the MX exactly once, and the stream then gives message.delivered."""
    rig = engine
    mx = rig.mx("events.test", 2)
    to = ["e0@events.test", "e1@events.test"]
    status, mid = _answer(_api(rig, rig.store.ddb), to)
    assert status == 202 and mid is not None
    assert _events(rig, _stream_records(rig, mid)) == [("message.queued", a) for a in to]
    assert [j.message_id for j in _sweep_next_run(rig)] == [mid]
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == to
    _sweep_and_deliver(rig)  # later runs: nothing more
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == to
    events = _events(rig, _stream_records(rig, mid))
    assert sorted(e for e in events if e[0] == "message.queued") == [("message.queued", a) for a in to]
    assert sorted(e for e in events if e[0] == "message.delivered") == [("message.delivered", a) for a in to]


class LateMeta:
    """The rig's DynamoDB client; right before a create's META put, `between(message id)` runs:
    the stream read while the create is still running."""

    def __init__(self, real: Any, table: str, between: Any) -> None:
        self.real, self.table, self.between = real, table, between

    def put_item(self, **kw: Any) -> Any:
        key = kw["Item"]
        if kw.get("TableName") == self.table and key["sk"]["S"] == "META" and key["pk"]["S"].startswith("MSG#"):
            self.between(key["pk"]["S"].removeprefix("MSG#"))
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_committed_create_and_one_whose_meta_is_late_keep_their_events(engine: Rig) -> None:
    """The events of a message the API accepted are all there; so are those of a create whose
    META is late: the stream read in between (its recipients put, its META not yet) gives
    nothing yet, and the META's INSERT, in a later batch, gives each recipient's creation event
    (s17b: from the commit, the per-recipient source is gone; its recipients are read then)."""
    rig = engine
    mid = rig.send("q0@events.test", "q1@events.test")
    assert _events(rig, _stream_records(rig, mid)) == [("message.queued", "q0@events.test"),
                                                       ("message.queued", "q1@events.test")]
    from test_store_create_crash import TO

    early: list[dict] = []

    def between(late: str) -> None:
        early.extend(_stream_records(rig, late))
        assert [r["eventName"] for r in early] == ["INSERT"] * len(TO) and _events(rig, early) == []

    ddb = LateMeta(rig.store.ddb, rig.store.table, between)
    api = SendService(store=MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock),
                      suppressions=rig.suppressions, queue=rig.queue, domains=rig.api.domains, clock=rig.clock)
    late = api.send_one(SendRequest.model_validate({"from": "app@sender.test", "to": TO, "subject": "late",
                                                    "text": "Hi.\n"}))["id"]
    assert early and str(early[0]["dynamodb"]["Keys"]["pk"]["S"]) == f"MSG#{late}"
    rest = _stream_records(rig, late)[len(early):]
    assert rest[0]["dynamodb"]["Keys"]["sk"]["S"] == "META"
    assert _events(rig, rest) == [("message.queued", a) for a in TO]
