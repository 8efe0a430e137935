"""One job's run, as named steps (Postal): record carried 2xx replies, hop (wait out a long
delay), load, drop a stale job, pick what is due, admit (memory budget), claim, expire,
suppress, record each outcome, reschedule. DeliveryService (service.py) calls them in order;
the per-domain SMTP work between `suppress` and `reschedule` is domain.py's.

Each step takes the service as its `Context`: the store, suppression list, queue, clock, RNG,
metrics and sleep it was built with (or that a test swapped in since).

Nothing is lost, and every recipient reaches a final state:
- each recipient moves only by conditional writes (store.py): open -> leased -> final, so a
  redelivered or duplicated job never sends to a recipient that is already final;
- each outcome is written right after its transaction, so a run killed by the Lambda timeout,
  or an exception in another domain, keeps every reply already received;
- a recipient that got a 2xx is never released: its write is retried in process with backoff;
  if the store still refuses, the lease is kept and the 2xx travels in the next job
  (`QueueJob.delivered`, queued after a release delay, well within the lease), which records
  it before anything else, even if it has become stale, and carries it on while the store
  keeps failing; only a store that fails for longer than the lease reopens the crash window;
- one job per message is current: its token is stored on the message (store.replace_job) and
  a job with another token is a stale duplicate, dropped (a job with no token, from the API or
  the sweeper, always runs and its successor takes over). Each run that leaves a recipient
  open queues exactly one job (at the earliest time anyone open is due: deferred ones at their
  next_attempt_at, ones leased by another invocation when that lease ends, released ones after
  a release delay) *before* making it current, so the current token always names a job that
  is queued or running: no open recipient is ever left without a future job, and duplicates
  die at the next reschedule instead of doubling every round;
- a recipient is not retried before its next_attempt_at;
- work the invocation has no time left for (or no memory budget) is released with no attempt
  counted, and queued again after `delay_for_release` (never 0: a release records nothing, so
  at once would be a hot loop, issue 8 item 5);
- the lifetime is min(the message's expires_in, OUTPOST_MAX_LIFETIME) from its creation (from
  its send_at when scheduled, issue 14: scheduling.py starts those recipients at their time).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiosmtplib import SMTPStatus

from ..clock import iso
from ..config import Settings
from ..models import QueueJob, RecipientState
from ..records import Attempt, Message, Recipient, StoredMessage, Suppression, Waiting
from ..reputation import PauseCheck, Reputation
from ..store import Jobs, Messages, Suppressions
from .backoff import delay_for_release, next_attempt_at
from .budget import MemoryBudget
from .trouble import Outcome, SmtpReply, Verdict, judge

log = logging.getLogger("outpost.sender")

# In-process retries of an outcome's write (seconds between tries): a 2xx gets the long list,
# since giving up on it means carrying it to the next job; anything else the short one.
WRITE_RETRIES_2XX = (0.1, 0.3, 1.0, 2.0, 4.0)
WRITE_RETRIES = (0.1, 0.3)


class Context(Protocol):
    """What the steps use of the service: its side effects, passed in (STYLE.md)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> Messages: ...
    @property
    def suppressions(self) -> Suppressions: ...
    @property
    def queue(self) -> Jobs: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def rng(self) -> Callable[[], float]: ...
    @property
    def count(self) -> Callable[[str, int], None]: ...
    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]: ...
    @property
    def reputation(self) -> Reputation | None: ...  # counts hard bounces (issue 11 item 6)
    @property
    def paused(self) -> PauseCheck | None: ...  # is the message's domain or key paused


@dataclass
class Rcpt:
    """A claimed recipient on its way to a transaction."""

    index: int
    address: str
    smtp_addr: str
    domain: str
    attempts: int
    utf8: bool
    waited: int = 0  # its consecutive waits for shaping so far (Waiting.waits): the next is longer


@dataclass
class Result:
    verdict: Verdict
    attempt: dict | None = None
    # A transient verdict that waits for a time, not for the retry schedule (issue 11: the
    # provider is suspended): due when it ends, and `waiting` says so.
    wait: Waiting | None = None


Record = Callable[[Rcpt, Result], Awaitable[None]]


@dataclass
class JobRun:
    """What one run of a job learnt, for the job-level step at its end (reschedule)."""

    job: QueueJob
    rcpts: list[Rcpt] = field(default_factory=list)  # claimed and about to be attempted
    recorded: set[int] = field(default_factory=set)
    next_times: list[float] = field(default_factory=list)  # of the recipients deferred now
    later: list[float] = field(default_factory=list)  # of open recipients skipped as not due
    # 2xx replies the store refused to record: kept leased until these times, and carried.
    held: dict[int, float] = field(default_factory=dict)
    carried: list[dict] = field(default_factory=list)
    released_early: bool = False  # released without an attempt (no time, no memory budget)
    handed_off: set[int] = field(default_factory=set)  # to the slow lane (a slow MX), no attempt
    observed: str | None = None  # the message's current job token when this run loaded it


class RecordFailed(Exception):
    """Writing an outcome to the store failed (the store's exception is the cause)."""


def lifetime_end(settings: Settings, meta: Message) -> float:
    """When the message's recipients expire: its own deadline, capped by the operator's
    OUTPOST_MAX_LIFETIME from its creation (Postfix maximal_queue_lifetime)."""
    until = float(meta.deliver_until)
    created = meta.send_at if meta.send_at is not None else meta.created_ts  # scheduled: from send_at
    if created is not None and settings.max_lifetime is not None:
        until = min(until, float(created) + settings.max_lifetime)
    return until


# ---- before the message is read --------------------------------------------------------------
async def write_retrying(ctx: Context, write: Callable[[], Any], delays: tuple[float, ...],
                         deadline: float | None = None) -> Any:
    """Run a store write in a thread, retrying with backoff after an exception (boto3 has
    retried already: this outlasts a throttling episode, not a bug). Raises the last error."""
    for pause in (*delays, None):
        try:
            return await asyncio.to_thread(write)
        except Exception as exc:
            if pause is None or (deadline is not None and ctx.clock() + pause > deadline):
                raise
            log.warning("a store write failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
            await ctx.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


async def record_carried(ctx: Context, run: JobRun) -> None:
    """2xx replies the previous run could not record: facts, recorded before anything else
    (even for a stale job), and never sent again; carried on while the store keeps failing."""
    mid = run.job.message_id
    for item in run.job.delivered or []:
        index, attempt = int(item["index"]), item.get("attempt") or {}
        v = judge(SmtpReply(attempt.get("code") or SMTPStatus.completed, attempt.get("text") or "", "EOD"))
        try:
            await write_retrying(ctx, functools.partial(
                ctx.store.finish_attempt, mid, index, RecipientState.DELIVERED, ctx.clock(),
                Attempt.from_dict(attempt) if attempt else None, last=v.as_dict(),
                remote_id=attempt.get("remote_id")), WRITE_RETRIES)
            ctx.count("Delivered", 1)
        except Exception:  # noqa: BLE001 - carried again; the store is still failing
            log.exception("recording a carried 2xx failed again", extra={"message_id": mid})
            run.carried.append(item)
            run.held[index] = ctx.clock()


async def hop(ctx: Context, run: JobRun, now: float) -> bool:
    """SQS delays stop at 15 minutes; a job due later hops through the queue. True if it did, or
    if it ended instead: a message with no open recipient left (a canceled schedule) has nothing
    for the job to do at its time, so it stops hopping (it hopped every 15 minutes until send_at)."""
    job = run.job
    if not (job.not_before and job.not_before > now + 1):
        return False
    if not run.carried and not await _anything_open(ctx, job.message_id):
        log.info("a job with nothing open ends its hops", extra={"message_id": job.message_id})
        ctx.count("HopEnded", 1)
        return True
    again = job.model_copy(update={"delivered": run.carried or None})
    await asyncio.to_thread(ctx.queue.send, again, job.not_before - now)
    return True


async def _anything_open(ctx: Context, message_id: str) -> bool:
    """Whether the message has a recipient left open (scheduled, queued or deferred). A message
    that is gone (or never committed) has none: the job would drop it at its time anyway. The
    store stops at the first open recipient (a page, not the whole message, each hop)."""
    return await asyncio.to_thread(ctx.store.any_open, message_id)


async def load(ctx: Context, run: JobRun) -> StoredMessage | None:
    """The message and its recipients; None (the job dropped) when there is no such message."""
    stored = await asyncio.to_thread(ctx.store.load, run.job.message_id)
    if stored is None:
        log.warning("job for an unknown message dropped", extra={"message_id": run.job.message_id})
        ctx.count("UnknownMessage", 1)
        return None
    run.observed = stored.meta.job_token
    return stored


async def drop_if_stale(ctx: Context, run: JobRun, meta: Message) -> bool:
    """True (and the job dropped) when another job is the message's current one (issue 8 item
    12): this is a duplicate (SQS at-least-once, a requeue whose run was redelivered). The
    current job covers every open recipient, so dropping this one loses nothing. A job without
    a token (the API's, the sweeper's, one queued before tokens existed) is never dropped: it
    may be the only job left (the current one died in the DLQ); it runs, and its successor
    takes over from the current job, so the number of live jobs never grows."""
    job = run.job
    if job.token is None or job.token == run.observed:
        return False
    run.observed = job.token  # its requeue (carrying 2xx replies) must not take over
    if run.carried:
        await asyncio.to_thread(reschedule, ctx, run)  # keep what still has to be recorded
    log.info("stale job dropped", extra={"message_id": job.message_id, "token": job.token,
                                         "current": meta.job_token})
    ctx.count("StaleJob", 1)
    return True


def pick_due(run: JobRun, recipients: list[Recipient], now: float, until: float) -> list[Recipient]:
    """The open recipients due now; the times the others are due go to `run.later`."""
    lifetime_over = now >= until
    due: list[Recipient] = []
    for r in recipients:
        if not r.is_open or r.index in run.held:
            continue
        at = r.next_attempt_at
        lease = r.lease_until
        if lease is not None and float(lease) > now:
            # Another invocation holds it: it records it and queues its own job, but that
            # job may lose the race to be current, so this run's job covers it too.
            run.later.append(float(lease) + 1)
        elif at is not None and float(at) > now + 1 and not lifetime_over:
            # Not before its time (the schedule is per recipient).
            run.later.append(float(at))
        else:
            due.append(r)
    return due


async def admit(ctx: Context, run: JobRun, budget: MemoryBudget, cost: int, wait: float) -> bool:
    """Room in the batch's memory budget (issue 8 item 13), waiting at most `wait`; without
    it, the job is released with no attempt counted, and requeued (False)."""
    if await budget.take(cost, wait):
        return True
    log.info("memory budget full; job released", extra={"message_id": run.job.message_id, "cost": cost})
    ctx.count("MemoryBudgetRelease", 1)
    run.released_early = True
    await asyncio.to_thread(reschedule, ctx, run)
    return False


# ---- claimed recipients ----------------------------------------------------------------------
async def claim(ctx: Context, run: JobRun, due: list[Recipient], now: float, lease: float) -> list[Recipient]:
    """Lease each due recipient for this run. A recipient leased elsewhere is that invocation's:
    it records and reschedules it; this run's job comes back when that lease ends, in case that
    job is not current."""
    mid = run.job.message_id
    claimed = []
    for r in due:
        if await asyncio.to_thread(ctx.store.claim, mid, r.index, now, lease):
            claimed.append(r)
        else:
            run.later.append(now + lease)
    return claimed


def expire(ctx: Context, mid: str, r: Recipient, now: float) -> None:
    """A recipient that outlived the message's lifetime: expired (RFC 3463 4.4.7), with the
    last reply it had."""
    prev = dict(r.last or {})
    text = f"message expired; last reply: {prev.get('code', '')} {prev.get('text', 'none')}".strip()
    if r.waiting is not None:
        # Held with no attempt (issue 11: a pause writes no reply of its own): say what it waited for.
        w = r.waiting
        text = f"message expired while waiting ({w.reason}: {w.detail or w.provider}); " + text.removeprefix(
            "message expired; ")
    last = dict(prev, status="4.4.7", text=text)
    ctx.store.finish_attempt(mid, r.index, RecipientState.EXPIRED, now, None, last=last)
    ctx.count("Expired", 1)


async def suppress(ctx: Context, run: JobRun, claimed: list[Recipient], now: float) -> list[Recipient]:
    """The suppression list, checked at send time too (it may have changed since the API
    queued the message): those on it are final (suppressed); returns the rest."""
    mid = run.job.message_id
    suppressed = await asyncio.to_thread(ctx.suppressions.suppressed, [r.address for r in claimed])
    active: list[Recipient] = []
    for r in claimed:
        if r.address.lower() in suppressed:
            last = {"status": "5.7.1", "text": "address is on the suppression list"}
            await asyncio.to_thread(functools.partial(
                ctx.store.finish_attempt, mid, r.index, RecipientState.SUPPRESSED, now, None, last=last))
            ctx.count("Suppressed", 1)
        else:
            active.append(r)
    return active


async def hold_if_paused(ctx: Context, run: JobRun, meta: Message, due: list[Recipient], now: float) -> bool:
    """The reputation breaker (issue 11 item 6): when the message's sending domain or API key
    is paused, its due recipients are held, not sent: deferred to the next check with no
    attempt counted and `waiting: paused` (one conditional write each; one cached state read
    per job, and a failing read never blocks delivery). True if it held them."""
    if ctx.paused is None or not due or now >= meta.deliver_until:
        return False  # (a recipient past its lifetime expires as usual, paused or not)
    state = await asyncio.to_thread(ctx.paused.paused, meta.from_domain, meta.key_id)
    if state is None:
        return False
    until = min(now + ctx.settings.reputation_recheck, meta.deliver_until)
    waiting = Waiting("paused", state.scope, until, f"sending is paused: {state.reason or ''}".strip())
    mid = run.job.message_id
    for r in due:
        held = await asyncio.to_thread(ctx.store.hold, mid, r.index, now, until, waiting)
        run.later.append(until if held else now + ctx.settings.reputation_recheck)
    log.info("recipients held: sending is paused", extra={"message_id": mid, "scope": state.scope,
                                                          "recipients": len(due)})
    ctx.count("HeldPaused", len(due))
    return True


# ---- outcomes ----------------------------------------------------------------------------------
def record_one(ctx: Context, mid: str, meta: Message, r: Rcpt, res: Result) -> float | None:
    """Record one recipient's verdict; returns its next attempt time when deferred."""
    now = ctx.clock()
    v = res.verdict
    attempt = Attempt.from_dict(res.attempt) if res.attempt else None
    if v.outcome is Outcome.DELIVERED:
        ctx.store.finish_attempt(mid, r.index, RecipientState.DELIVERED, now, attempt, last=v.as_dict(),
                                 remote_id=attempt.remote_id if attempt else None)
        ctx.count("Delivered", 1)
        return None
    if v.outcome is Outcome.PERMANENT:
        if _bounce(ctx, mid, r, v, attempt, now) and v.kind == "hard" and ctx.reputation is not None:
            ctx.reputation.count_bounce(meta.from_domain, meta.key_id)  # never raises
        return None
    if res.wait is not None:
        return _wait(ctx, mid, meta, r, v, attempt, res.wait, now)
    return _defer(ctx, mid, meta, r, v, attempt, now)


def _bounce(ctx: Context, mid: str, r: Rcpt, v: Verdict, attempt: Attempt | None, now: float) -> bool:
    """Bounce the recipient; False if it was already final (a duplicate job recorded it)."""
    if v.kind == "hard":
        # Suppress first (add is idempotent): once the recipient is final, a retry of this job
        # would never come back to write it.
        ctx.suppressions.add(Suppression.new(
            r.address, now, source="bounce", reason=v.reason, kind=v.kind, message_id=mid,
            status=v.status, diagnostic=v.diagnostic))
    bounce = {"kind": v.kind, "reason": v.reason, "status": v.status,
              "diagnostic": v.diagnostic, "source": "smtp", "at": iso(now),
              "remote_mta": attempt.mx if attempt else None}
    moved = ctx.store.finish_attempt(mid, r.index, RecipientState.BOUNCED, now, attempt, last=v.as_dict(),
                                     bounce=bounce)
    ctx.count("Bounced", 1)
    return moved


def _defer(ctx: Context, mid: str, meta: Message, r: Rcpt, v: Verdict, attempt: Attempt | None,
           now: float) -> float | None:
    """A transient verdict: deferred to the schedule's next step, or expired (4.4.7) when the
    lifetime leaves no next step."""
    last = v.as_dict()
    at = next_attempt_at(now, r.attempts + 1, meta.deliver_until, ctx.settings.retry_schedule, ctx.rng())
    if at is None:
        expired = dict(last, status="4.4.7", text=f"message expired; last reply: {v.diagnostic}")
        ctx.store.finish_attempt(mid, r.index, RecipientState.EXPIRED, now, attempt, last=expired)
        ctx.count("Expired", 1)
        return None
    moved = ctx.store.finish_attempt(mid, r.index, RecipientState.DEFERRED, now, attempt, last=last,
                                     next_attempt_at=at)
    ctx.count("Deferred", 1)
    return at if moved else None


def _wait(ctx: Context, mid: str, meta: Message, r: Rcpt, v: Verdict, attempt: Attempt | None,
          w: Waiting, now: float) -> float | None:
    """A transient verdict that waits until `w.until` (its provider's suspension): due then,
    plus a little jitter (at most a tenth of the wait, at most a minute) so the recipients
    of a suspension do not all come back at the same second; not the retry schedule's step,
    and its position there moves only if `attempt` is counted. Expired (4.4.7) when the
    lifetime has no time left; never later than its last second."""
    last = v.as_dict()
    end = meta.deliver_until - 1
    if now >= end:
        expired = dict(last, status="4.4.7", text=f"message expired; last reply: {v.diagnostic}")
        ctx.store.finish_attempt(mid, r.index, RecipientState.EXPIRED, now, attempt, last=expired)
        ctx.count("Expired", 1)
        return None
    at = min(w.until + ctx.rng() * min(60.0, max(0.0, w.until - now) / 10), end)
    moved = ctx.store.finish_attempt(mid, r.index, RecipientState.DEFERRED, now, attempt, last=last,
                                     next_attempt_at=at, waiting=w)
    ctx.count("Deferred", 1)
    return at if moved else None


def recorder(ctx: Context, run: JobRun, meta: Message, now: float, lease: float,
             deadline: float) -> Record:
    """The `record` the per-domain work calls with each outcome as soon as it is known."""
    mid = run.job.message_id

    async def record(rc: Rcpt, res: Result) -> None:
        """Record one recipient's outcome now, not at the end of the job: a run killed by
        the Lambda timeout keeps every reply already received. A failed write is retried
        with backoff; a 2xx that still cannot be written is never released (issue 8 item
        9): the lease is kept and the reply is carried to the next job, which records it."""
        delivered = res.verdict.outcome is Outcome.DELIVERED
        try:
            at = await write_retrying(ctx, lambda: record_one(ctx, mid, meta, rc, res),
                                      WRITE_RETRIES_2XX if delivered else WRITE_RETRIES, deadline)
        except Exception as exc:
            if not delivered:
                raise RecordFailed(f"recording recipient {rc.index} failed: {exc}") from exc
            log.error("recording a delivery failed; the 2xx is carried to the next job",
                      exc_info=exc, extra={"message_id": mid, "recipient_index": rc.index})
            ctx.count("DeliveryRecordFailed", 1)
            run.held[rc.index] = now + lease
            run.carried.append({"index": rc.index, "attempt": res.attempt or {}})
            return
        run.recorded.add(rc.index)
        if at is not None:
            run.next_times.append(at)

    return record


# ---- the end of the run ----------------------------------------------------------------------
def reschedule(ctx: Context, run: JobRun) -> None:
    """The job-level step: release what this run claimed but did not record (no time left,
    a failed write), then queue one job for the earliest time anyone still open is due, and
    make it the message's current job. Queued first, current second: a crash in between
    leaves the old token current, and the old job (redelivered by SQS) runs again."""
    job, mid = run.job, run.job.message_id
    now = ctx.clock()
    unrecorded = [rc for rc in run.rcpts if rc.index not in run.recorded and rc.index not in run.held]
    for rc in unrecorded:
        ctx.store.release(mid, rc.index)
    if run.handed_off:
        # The slow lane's job: tokenless, so it runs (and takes over) whatever job is current;
        # queued after the releases above, so it finds those recipients free.
        ctx.queue.send(QueueJob(message_id=mid, attempt=job.attempt, slow=True), 0)
        unrecorded = [rc for rc in unrecorded if rc.index not in run.handed_off]
    times = run.next_times + run.later
    releases = 0
    if unrecorded or run.released_early or run.carried:
        # Released with no attempt recorded: never at once (a hot loop until expiry, item 5).
        releases = job.releases + 1 if not run.recorded else 1
        times.append(now + delay_for_release(releases))
    if not times:
        return
    # A 2xx not recorded is carried by this job, which comes after a release delay, while
    # the kept lease still stops any other job from sending to the recipient: the carried
    # reply is recorded before anyone may claim it again (a lease lasts 5 minutes).
    at = min(times)
    # attempt counts this message's delivery runs; a job only for recipients not yet
    # due is the same run, moved to its time.
    attempt = job.attempt + 1 if run.next_times else job.attempt
    token = secrets.token_hex(8)
    ctx.queue.send(QueueJob(message_id=mid, attempt=attempt, not_before=at, token=token,
                            releases=releases, delivered=run.carried or None), max(0.0, at - now))
    if not ctx.store.replace_job(mid, token, run.observed):
        # Another run made its job current first; that job covers every open recipient
        # (it comes back when our leases end at the latest), and ours will be dropped.
        log.info("another job became current; this run's job will be dropped",
                 extra={"message_id": mid, "token": token})
        ctx.count("JobSuperseded", 1)
