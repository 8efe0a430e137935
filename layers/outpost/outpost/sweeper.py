"""Re-queue overdue work, so that every open recipient always has a future job (issue 8, item 11).

Accepting a message is two writes that cannot be one transaction: the records (DynamoDB) and
the job (SQS). POST /v1/messages/batch stores up to 500 messages before it enqueues any; a
timeout in between, a job parked in the dead-letter queue, or an invocation killed after a
claim would each leave recipients open with no job to move them. The store keeps a sparse
index of open recipients by the time their next job is due (store.py, gsi5: queued -> at
creation, deferred -> its next attempt, leased -> the lease's end; removed when final), and
this sweeper, run on a schedule, queues a job for every message with a recipient overdue by
more than a grace period. The sender is idempotent per recipient (conditional claims), so a
job queued for a recipient that turns out to be in progress or done is a no-op.

Postfix's qmgr does the same for its deferred queue: a periodic scan, not a promise kept by
the code path that failed. Its jobs are rescues, so they go to the retry queue
(bootstrap.retry_queue), never behind a backlog of new mail.

The same schedule re-evaluates the reputation breaker's active scopes (issue 11 review:
reputation.Reputation.evaluate_active): rolling windows move with time, not only with events,
so a warn clears and the published per-domain rates stay current without a new bounce.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import QueueJob
from .records import Overdue
from .store import Jobs, Messages

if TYPE_CHECKING:
    from .reputation import Reputation

log = logging.getLogger("outpost.sweeper")

SWEEP_GRACE = 900  # seconds a recipient may be overdue before the sweeper queues a job for it
SWEEP_LIMIT = 1000  # overdue recipients read per shard per run; the next run takes the rest


@dataclass(frozen=True)
class SweepReport:
    overdue: int  # recipients found overdue
    messages: int  # messages a job was queued for
    failed: int  # messages whose job could not be queued (retried by the next run)

    def as_dict(self) -> dict[str, int]:
        return {"overdue": self.overdue, "messages": self.messages, "failed": self.failed}


class Sweeper:
    def __init__(self, *, store: Messages, queue: Jobs, clock: Callable[[], float] = time.time,
                 grace: float = SWEEP_GRACE, limit: int = SWEEP_LIMIT,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 reputation: Reputation | None = None) -> None:
        self.store, self.queue, self.clock = store, queue, clock
        self.grace, self.limit, self.count = grace, limit, count
        self.reputation = reputation

    def handle_schedule(self, event: dict[str, Any]) -> dict[str, int]:
        """An EventBridge scheduled event (events/schedule.json) -> one sweep. The event carries
        nothing the sweep needs; its time is logged to tie a run to its schedule."""
        report = self.sweep()
        log.info("sweep done", extra={"scheduled_at": event.get("time"), **report.as_dict()})
        out: dict[str, int] = report.as_dict()
        if self.reputation is not None:
            try:
                out.update(self.reputation.evaluate_active())
            except Exception:  # noqa: BLE001 - the overdue sweep's work stands; the next run retries
                log.exception("reputation evaluation failed")
                self.count("ReputationStoreError", 1)
            log.info("reputation evaluated", extra={k: v for k, v in out.items() if k.startswith("reputation")})
        return out

    def sweep(self) -> SweepReport:
        now = self.clock()
        found = self.store.overdue(now - self.grace, self.limit)
        by_message: dict[str, list[Overdue]] = {}
        for o in found:
            by_message.setdefault(o.message_id, []).append(o)
        failed = 0
        for message_id, recipients in by_message.items():
            try:
                self.reissue(message_id, recipients, now)
            except Exception:  # noqa: BLE001 - one message must not stop the sweep; next run retries
                log.exception("could not queue a job for overdue recipients",
                              extra={"message_id": message_id, "recipients": [r.index for r in recipients]})
                failed += 1
        if found:
            log.warning("queued jobs for overdue recipients",
                        extra={"overdue": len(found), "messages": len(by_message) - failed})
        self.count("OverdueRecipients", len(found))
        self.count("SweptMessages", len(by_message) - failed)
        return SweepReport(len(found), len(by_message) - failed, failed)

    def reissue(self, message_id: str, recipients: list[Overdue], now: float) -> None:
        """The one place the sweeper creates work: queue a job for the message (the sender
        then takes every recipient of it that is due), and move the recipients' due time to
        now, so the next run does not queue another job before a grace period has passed.
        The job goes first: if it fails, the due times stay and the next run tries again."""
        self.queue.send(QueueJob(message_id=message_id), 0)
        for r in recipients:
            self.store.postpone_due(message_id, r.index, r.due_at, now)
