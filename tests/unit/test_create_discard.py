"""A message stored but not queued is taken back (store.discard) and the caller told to retry
(503). When the take-back itself fails, the message stays committed with its recipients in the
due index, so the sweeper queues it later: answering 503 then would make the client's retry a
second copy. The answer is the accepted one (202), single send and batch alike (review r14)."""

from __future__ import annotations

from outpost.api.service import SendService
from outpost.models import RecipientState, SendRequest
from outpost.sweeper import Sweeper
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions, Unavailable

SENDER = "shop.test"


class StuckMessages(FakeMessages):
    """A store whose discard fails (DynamoDB throttling or down at that moment)."""

    def discard(self, message_id: str, recipient_count: int) -> None:
        raise Unavailable("the message store is unavailable")


def _body(i: int = 0) -> dict:
    return {"from": f"Shop <news@{SENDER}>", "to": [f"alice{i}@example.test"], "subject": "Hello", "text": "Hi."}


def _api(store: FakeMessages, clock: FakeClock) -> tuple[SendService, FakeJobs]:
    jobs = FakeJobs()
    return SendService(store=store, suppressions=FakeSuppressions(), queue=jobs,  # type: ignore[arg-type]
                       domains=FakeDomains(SENDER), clock=clock), jobs  # type: ignore[arg-type]


def _rescued(store: FakeMessages, clock: FakeClock) -> list[str]:
    """What the sweeper queues once the grace period is over: the messages that will be sent."""
    jobs = FakeJobs()
    clock.advance(3600)
    Sweeper(store=store, queue=jobs, clock=clock, grace=900).sweep()  # type: ignore[arg-type]
    return [j.message_id for j, _ in jobs.sent]


def test_a_send_whose_take_back_fails_is_accepted_as_the_sweeper_will_send_it() -> None:
    clock, store = FakeClock(), StuckMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    out = api.send_one(SendRequest.model_validate(_body()))
    assert out["recipients"] == [{"address": "alice0@example.test", "status": "queued"}]
    assert store.messages[out["id"]].recipients[0].record.state is RecipientState.QUEUED
    assert _rescued(store, clock) == [out["id"]]  # exactly the copy the caller was told about


def test_a_send_taken_back_is_still_a_503_and_nothing_is_left_to_send() -> None:
    clock, store = FakeClock(), FakeMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    try:
        api.send_one(SendRequest.model_validate(_body()))
    except Unavailable:
        pass
    else:
        raise AssertionError("the queue's failure was not reported")
    assert store.messages == {} and _rescued(store, clock) == []


def test_a_batch_whose_take_back_fails_answers_every_item_and_sends_each_once() -> None:
    clock, store = FakeClock(), StuckMessages()
    api, jobs = _api(store, clock)
    jobs.fail = True
    out, _ = api.send_batch([_body(0), _body(1)])
    assert [r["status"] for r in out["results"]] == [202, 202]
    ids = sorted(r["id"] for r in out["results"])
    assert sorted(_rescued(store, clock)) == ids


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
