"""A committed message is accepted (s17f): when SQS refuses its job after the create, the API
answers 202 (the batch item its accepted answer) and marks its open recipients overdue, so the
sweeper's next run queues the job (not one after SWEEP_GRACE). No take-back: the events function
may already have published message.queued from the META's INSERT. In the fake store."""

from __future__ import annotations

from outpost.api.service import SendService
from outpost.clock import iso
from outpost.models import RecipientState, SendRequest
from outpost.sweeper import SWEEP_GRACE, Sweeper
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions

SENDER = "shop.test"


def _body(i: int = 0) -> dict:
    return {"from": f"Shop <news@{SENDER}>", "to": [f"alice{i}@example.test"], "subject": "Hello", "text": "Hi."}


def _api(store: FakeMessages, clock: FakeClock) -> tuple[SendService, FakeJobs]:
    jobs = FakeJobs()
    return SendService(store=store, suppressions=FakeSuppressions(), queue=jobs,  # type: ignore[arg-type]
                       domains=FakeDomains(SENDER), clock=clock), jobs  # type: ignore[arg-type]


def _swept(store: FakeMessages, clock: FakeClock, after: float) -> list[str]:
    """What one sweeper run `after` seconds later queues: the messages that will be sent."""
    jobs = FakeJobs()
    clock.advance(after)
    Sweeper(store=store, queue=jobs, clock=clock, grace=SWEEP_GRACE).sweep()  # type: ignore[arg-type]
    return [j.message_id for j, _ in jobs.sent]


def test_a_send_whose_job_is_refused_is_accepted_and_swept_at_the_next_run() -> None:
    """Before s17f: taken back and the queue's error raised (503), after the events function
    could already have published message.queued from the META's INSERT."""
    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    out = api.send_one(SendRequest.model_validate(_body()))
    assert out["recipients"] == [{"address": "alice0@example.test", "status": "queued"}]
    assert store.messages[out["id"]].recipients[0].record.state is RecipientState.QUEUED
    assert _swept(store, clock, 1) == [out["id"]]  # the next run, not after SWEEP_GRACE
    assert _swept(store, clock, 1) == []  # once: the sweep moved its due time to now


def test_an_unrefused_send_waits_for_the_grace_as_before() -> None:
    clock, store = FakeClock(), FakeMessages()
    api, _ = _api(store, clock)
    api.send_one(SendRequest.model_validate(_body()))
    assert _swept(store, clock, SWEEP_GRACE - 1) == []  # its own job runs it: no mark


def test_a_batch_whose_jobs_are_refused_accepts_every_item_and_the_next_sweep_queues_each_once() -> None:
    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    out, replayed = api.send_batch([_body(0), _body(1), {"from": "x"}])
    assert [r["status"] for r in out["results"]] == [202, 202, 422] and not replayed
    assert (out["accepted"], out["rejected"]) == (2, 1)
    ids = sorted(r["id"] for r in out["results"][:2])
    assert sorted(_swept(store, clock, 1)) == ids and _swept(store, clock, 1) == []


def test_a_scheduled_send_whose_hop_is_refused_is_swept_at_the_first_run_after_send_at() -> None:
    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    send_at = clock() + 3600
    out = api.send_one(SendRequest.model_validate({**_body(), "send_at": iso(send_at)}))
    assert out["recipients"] == [{"address": "alice0@example.test", "status": "scheduled"}]
    assert _swept(store, clock, 3599) == []  # not before its time
    assert _swept(store, clock, 2) == [out["id"]]


def test_the_mark_is_one_recipient_still_due_as_the_create_wrote_it() -> None:
    """One recipient is enough (the sweeper's job takes every due recipient of the message); one
    a job has moved since (deferred, finished) keeps its due time, and the next one is marked."""
    clock, store = FakeClock(), FakeMessages()
    api, _ = _api(store, clock)
    now = clock()
    out = api.send_one(SendRequest.model_validate({**_body(), "to": ["a@example.test", "b@example.test"]}))
    stored = store.load(out["id"])
    assert stored is not None
    rcpts = store.messages[out["id"]].recipients
    assert store.mark_overdue(out["id"], stored.recipients, now, SWEEP_GRACE) == 0
    assert [r.due_at for r in rcpts.values()] == [now - SWEEP_GRACE, now]
    rcpts[0].due_at = now + 600  # deferred by its job meanwhile
    rcpts[1].due_at = now
    assert store.mark_overdue(out["id"], stored.recipients, now, SWEEP_GRACE) == 1
    assert [r.due_at for r in rcpts.values()] == [now + 600, now - SWEEP_GRACE]
    rcpts[1].due_at = None  # final
    assert store.mark_overdue(out["id"], stored.recipients, now, SWEEP_GRACE) is None


class _Invocation:
    """Lambda's context for a batch: the time left falls by `per_call` ms at each reading."""

    def __init__(self, left_ms: int, per_call: int) -> None:
        self.left, self.per_call = left_ms, per_call

    def get_remaining_time_in_millis(self) -> int:
        self.left -= self.per_call
        return self.left


def test_a_batch_running_out_of_time_answers_the_rest_503_and_queues_what_it_stored() -> None:
    """Past BATCH_RESERVE seconds left, no message is started: each is answered 503 at its index
    (send it again), never half-done by the function's timeout, which would answer the caller a
    504 after storing and queueing part of the batch (a retry then sends those twice)."""
    from outpost.api.service import BATCH_RESERVE

    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    # 30 messages; the time left crosses the reserve after about 10 readings.
    context = _Invocation(int(BATCH_RESERVE * 1000) + 10_000, 1_000)
    out, _ = api.send_batch([_body(i) for i in range(30)], context=context)
    statuses = [r["status"] for r in out["results"]]
    accepted = [r for r in out["results"] if r["status"] == 202]
    assert 0 < len(accepted) < 30 and set(statuses) == {202, 503}, statuses
    late = [r for r in out["results"] if r["status"] == 503]
    assert all(r["error"]["code"] == "temporarily_unavailable" and "time" in r["error"]["message"] for r in late)
    assert sorted(j.message_id for j, _ in jobs.sent) == sorted(r["id"] for r in accepted)  # queued, once
    assert len(store.messages) == len(accepted)  # nothing stored for the late ones
    assert (out["accepted"], out["rejected"]) == (len(accepted), 30 - len(accepted))


def test_a_batch_with_time_to_spare_is_not_cut() -> None:
    clock, store = FakeClock(), FakeMessages()
    api, _ = _api(store, clock)
    out, _ = api.send_batch([_body(i) for i in range(30)], context=_Invocation(60_000, 1))
    assert [r["status"] for r in out["results"]] == [202] * 30


def test_a_batch_out_of_time_skips_the_marks_and_its_messages_are_swept_after_the_grace() -> None:
    """The marks (one UpdateItem a message) run within the batch's time left: past
    BATCH_RESERVE none is started, and the messages are still swept, after SWEEP_GRACE."""
    from outpost.api.service import BATCH_RESERVE

    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    # Four readings (the time left, then one a message) leave 0.5 s above the reserve; the marks' is below.
    out, _ = api.send_batch([_body(i) for i in range(3)],
                            context=_Invocation(int(BATCH_RESERVE * 1000) + 4_500, 1_000))
    assert [r["status"] for r in out["results"]] == [202] * 3
    assert _swept(store, clock, 1) == []  # not marked
    assert sorted(_swept(store, clock, SWEEP_GRACE)) == sorted(r["id"] for r in out["results"])
