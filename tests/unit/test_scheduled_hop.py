"""A scheduled message's job hops through the queue (SQS delays stop at 15 minutes) until its
send_at; once no recipient is open (the schedule was canceled), the next hop ends the job
instead (delivery/job.py hop). The fake store and a clock moved by hand."""

from __future__ import annotations

from outpost.models import QueueJob, RecipientState
from tests.unit.test_delivery_service import World
from tests.unit.test_scheduled import HOUR, KEY, _schedule

QUARTER = 900.0  # the queue's longest delay: one hop


def _hops(w: World, job: QueueJob, until: float) -> list[QueueJob]:
    """Run the job and each hop it queues, the clock moved to each hop's delay, until `until`."""
    seen: list[QueueJob] = []
    while w.clock() < until:
        before = len(w.jobs.sent)
        w.run(job)
        if len(w.jobs.sent) == before:
            break
        job, delay = w.jobs.sent[-1]
        seen.append(job)
        w.clock.advance(min(delay, QUARTER))
    return seen


def test_a_canceled_schedule_s_job_ends_at_its_next_hop() -> None:
    w = World()
    mid = _schedule(w, 10 * HOUR, "a@example.test", "b@example.test")
    [(job, _)] = w.api.queue.sent  # type: ignore[attr-defined]
    assert len(_hops(w, job, w.clock() + HOUR)) == 4  # an hour of hops while it is scheduled
    assert [r["status"] for r in w.api.cancel(mid, KEY)["recipients"]] == ["canceled"] * 2
    job, _ = w.jobs.sent[-1]
    assert _hops(w, job, w.clock() + 10 * HOUR) == []  # was 36 more hops, each a queue send
    assert w.counts.get("HopEnded") == 1 and w.connector.opened == []


def test_a_partly_canceled_schedule_hops_on_and_sends_the_rest_at_its_time() -> None:
    w = World()
    mid = _schedule(w, 2 * HOUR, "a@example.test", "b@example.test")
    [(job, _)] = w.api.queue.sent  # type: ignore[attr-defined]
    assert w.store.cancel(mid, 0, w.clock())
    hops = _hops(w, job, w.clock() + 3 * HOUR)
    assert len(hops) == 8 and "HopEnded" not in w.counts
    w.run(hops[-1])
    assert [r.state for r in w.recipients(mid)] == [RecipientState.CANCELED, RecipientState.DELIVERED]
    assert w.rcpts_sent() == ["b@example.test"]


def test_a_hop_of_a_50_recipient_message_whose_first_is_open_reads_one_page() -> None:
    """The hop asks the store whether anything is open: a page of 8 items (the META and 7
    recipients) answers it for a message whose first recipient is open; the whole message
    (`load`) is never read by a hop."""
    w = World()
    mid = _schedule(w, 10 * HOUR, *[f"r{i}@example.test" for i in range(50)])
    [(job, _)] = w.api.queue.sent  # type: ignore[attr-defined]
    loads: list[str] = []
    load = w.store.load
    w.store.load = lambda m: (loads.append(m), load(m))[1]  # type: ignore[method-assign]
    assert len(_hops(w, job, w.clock() + HOUR)) == 4
    assert w.store.open_pages == 4 and loads == []  # one page per hop; was the whole message each time
    for i in range(46):  # the first 46 canceled: the store pages on to the first open one
        assert w.store.cancel(mid, i, w.clock())
    job, _ = w.jobs.sent[-1]
    w.store.open_pages = 0
    assert len(_hops(w, job, w.clock() + 0.5 * HOUR)) == 2 and w.store.open_pages == 2 * 6  # 47 items: page 6
    for i in range(46, 50):
        assert w.store.cancel(mid, i, w.clock())
    job, _ = w.jobs.sent[-1]
    assert _hops(w, job, w.clock() + 10 * HOUR) == [] and w.counts.get("HopEnded") == 1
