"""The sweeper (outpost/sweeper.py) with in-memory fakes and a clock moved by hand: overdue
recipients get one job per message, only after the grace period, never twice within it, and a
queue failure leaves them for the next run (the real handler runs in tests/integration/test_sweeper.py).
"""

from __future__ import annotations

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.models import RecipientState, SendRequest
from outpost.sweeper import Sweeper
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions

KEY = Principal(key_id="k1", name="unit", scopes=frozenset({"send"}), domains=None)
GRACE = 900


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store, self.jobs = FakeMessages(), FakeJobs()
        self.api = SendService(store=self.store, suppressions=FakeSuppressions(), queue=self.jobs,
                               domains=FakeDomains("shop.test"), clock=self.clock)
        self.counts: dict[str, int] = {}
        self.sweeper = Sweeper(store=self.store, queue=self.jobs, clock=self.clock, grace=GRACE,
                               count=lambda name, n: self.counts.__setitem__(name, self.counts.get(name, 0) + n))

    def accept(self, *to: str) -> str:
        """A message stored and its job lost (the batch endpoint's timeout window)."""
        req = SendRequest.model_validate({"from": "news@shop.test", "to": list(to), "subject": "s", "text": "t"})
        return str(self.api.send_one(req, enqueue=False, principal=KEY)["id"])


def test_nothing_is_queued_within_the_grace_period() -> None:
    w = World()
    w.accept("a@x.test")
    w.clock.advance(GRACE - 1)
    report = w.sweeper.sweep()
    assert (report.overdue, report.messages, report.failed) == (0, 0, 0)
    assert w.jobs.sent == []


def test_one_job_per_message_with_overdue_recipients_and_not_again_within_the_grace() -> None:
    w = World()
    m1 = w.accept("a@x.test", "b@y.test", "c@z.test")
    m2 = w.accept("d@x.test")
    w.clock.advance(GRACE + 1)
    report = w.sweeper.sweep()
    assert (report.overdue, report.messages, report.failed) == (4, 2, 0)
    assert sorted(job.message_id for job, delay in w.jobs.sent) == sorted([m1, m2])
    assert all(delay == 0 for _, delay in w.jobs.sent)
    assert w.counts == {"OverdueRecipients": 4, "SweptMessages": 2}
    # the due times moved to now: the next run, before another grace has passed, queues nothing
    w.clock.advance(GRACE - 1)
    assert w.sweeper.sweep().overdue == 0 and len(w.jobs.sent) == 2
    w.clock.advance(2)
    assert w.sweeper.sweep().messages == 2 and len(w.jobs.sent) == 4


def test_a_queue_failure_keeps_the_recipients_overdue_for_the_next_run() -> None:
    w = World()
    mid = w.accept("a@x.test")
    w.clock.advance(GRACE + 1)
    w.jobs.fail = True
    report = w.sweeper.sweep()
    assert (report.overdue, report.messages, report.failed) == (1, 0, 1)
    w.jobs.fail = False
    report = w.sweeper.sweep()  # at once: the failed run did not move the due time
    assert (report.overdue, report.messages) == (1, 1)
    assert [job.message_id for job, _ in w.jobs.sent] == [mid]


def test_final_recipients_are_not_swept_and_a_deferred_one_waits_for_its_next_attempt() -> None:
    w = World()
    mid = w.accept("a@x.test", "b@x.test")
    now = w.clock()
    w.store.finish_attempt(mid, 0, RecipientState.DELIVERED, now, None)
    w.store.finish_attempt(mid, 1, RecipientState.DEFERRED, now, None, next_attempt_at=now + 3600)
    w.clock.advance(GRACE + 1)
    assert w.sweeper.sweep().overdue == 0 and w.jobs.sent == []
    w.clock.advance(3600)  # the deferred one's attempt is now overdue by more than the grace
    report = w.sweeper.sweep()
    assert (report.overdue, report.messages) == (1, 1) and [j.message_id for j, _ in w.jobs.sent] == [mid]


def test_the_scheduled_event_runs_one_sweep() -> None:
    w = World()
    w.accept("a@x.test")
    w.clock.advance(GRACE + 1)
    out = w.sweeper.handle_schedule({"time": "2026-11-30T00:00:00Z"})
    assert out == {"overdue": 1, "messages": 1, "failed": 0}
