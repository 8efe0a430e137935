"""Scheduled recipients (issue 14) at their time: the step that turns `scheduled` into `queued`.

A message sent with `send_at` has its recipients `scheduled`, with `next_attempt_at` (and the
sweeper's due time) at send_at, and one job whose `not_before` is send_at: the hop (job.py)
carries it past SQS's 15-minute delay limit. When a job finds a scheduled recipient due,
this step moves it to `queued` by one conditional write (store.start_scheduled: only
`scheduled` with send_at <= now moves); from there it is claimed, checked against the
suppression list (again: an address suppressed during the wait is not sent to, as SES and
Postmark check at send time), delivered and recorded like any other recipient.

Why nothing is sent early, by any path: the sender claims only queued or deferred recipients
(store.claim), and only this write makes a scheduled one queued, under its own condition on
send_at. A duplicate job, an early job, the sweeper's rescue job or a redelivery all meet
that condition; before send_at they change nothing (pick_due leaves them for later), after
it exactly one of them moves the recipient, and the claim's lease decides who sends.

Recipients count as sent for the reputation breaker when they start (a canceled schedule
was never sent), not when the API accepted them.
"""
from __future__ import annotations

import asyncio
import logging

from ..models import RecipientState
from ..records import Message, Recipient
from ..sandbox import is_simulated
from .job import Context, JobRun

log = logging.getLogger("outpost.sender")

# pick_due takes a recipient due within this many seconds (SQS delays are whole seconds); a
# scheduled one is then waited for, so it is never started before its send_at.
EARLY_WAIT = 1.0


async def start_due(ctx: Context, run: JobRun, meta: Message, due: list[Recipient],
                    now: float) -> list[Recipient]:
    """`due` with its scheduled recipients started (queued), those that could not be started
    left out: canceled meanwhile, or started by another job (which claims and records them)."""
    scheduled = [r for r in due if r.state is RecipientState.SCHEDULED]
    if not scheduled:
        return due
    latest = max(float(r.next_attempt_at or 0.0) for r in scheduled)
    if latest > now:
        await ctx.sleep(min(EARLY_WAIT, latest - now))
        now = ctx.clock()
    mid = run.job.message_id
    out = [r for r in due if r.state is not RecipientState.SCHEDULED]
    started = counted = 0
    for r in scheduled:
        if await asyncio.to_thread(ctx.store.start_scheduled, mid, r.index, now):
            out.append(r.replace(state=RecipientState.QUEUED, next_attempt_at=None))
            started += 1
            counted += not is_simulated(r.address, meta.mode)  # the sandbox's feed no breaker
        elif r.next_attempt_at is not None and float(r.next_attempt_at) > now:
            run.later.append(float(r.next_attempt_at))  # not due by this clock yet: at its time
    if started:
        log.info("scheduled recipients started", extra={"message_id": mid, "recipients": started})
        ctx.count("ScheduledStarted", started)
        if ctx.reputation is not None and counted:
            ctx.reputation.count_sent([(meta.from_domain, meta.key_id, counted)])  # never raises
    return out
