"""Deliver queued messages: SQS batch -> per-recipient SMTP transactions -> recorded outcomes.

A delivery is a sequence of small named steps (Postal). Per job (job.py): record carried 2xx
replies, hop (wait out a long delay), load, drop a stale job, pick what is due, admit (memory
budget), claim, expire, suppress; prepare (prepare.py: spec, MIME, DKIM); then per domain
(domain.py): route, TLS policy, transact and record (per recipient); reschedule (job.py, per job).
DeliveryService is the orchestrator that bootstrap builds and calls them in that order; job.py
states the invariants of recipients, records and jobs (nothing lost, one current job, release
delays). domain.py states the SMTP side's (what fails outside a transaction is judged, the time
budget per transaction and connection, the MX address and session limits, the domain's slice,
the slow lane). Whatever fails while preparing the message (unreadable spec, MIME, signer) is
judged like any reply too, so those recipients defer and finally expire (4.4.7) instead of
stranding behind a job in the DLQ; a job fails (stays on the queue, then the DLQ) only when
the store itself failed.

The one unavoidable window: a crash after the remote server's 250 but before the record is
written (and, documented, an end-of-data reply that never comes: the server may have taken the
message, RFC 1047; we wait up to 10 minutes or what the invocation has left, then defer with a
note). The lease then expires, SQS redelivers, and that recipient gets the message twice.

Batches run in one event loop, which owns an SMTP session pool for the whole batch, so
messages to the same domain reuse connections (RSET between transactions) and are closed with
QUIT at the end. That is why this is not Powertools' process_partial_response: the pool must
outlive each record's handler.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from ..clock import iso
from ..config import Settings
from ..errors import NoSigningKeyError
from ..models import QueueJob
from ..mx import MxHost
from ..records import Message, Recipient, Suspension
from ..reputation import PauseCheck, Reputation
from ..store import Jobs, Messages, Slots, Suppressions, Suspensions
from ..tls_policy import TlsPolicy, no_policy
from . import domain as domain_step
from . import job as step
from . import simulator
from .budget import MemoryBudget, memory_cost
from .domain import RECORD_MARGIN
from .job import JobRun, Rcpt, RecordFailed, Result
from .prepare import DkimSigner, Prepared, prepare, unprepared
from .scheduling import start_due
from .shaping import Shaper
from .suspension import connection_cap
from .transport import Connector, SessionPool, TlsMode
from .trouble import Verdict, judge

__all__ = ["DeliveryService", "MemoryBudget"]

log = logging.getLogger("outpost.sender")

LEASE_MARGIN = 30.0  # seconds a lease outlives the invocation's deadline
POLICY_WAIT = 30.0  # the longest the sender waits for an MTA-STS lookup, whatever tls_policy does

# The names the unit tests that call _deliver_domain import (job.py's records).
_Rcpt = Rcpt
_Result = Result


class DeliveryService:
    def __init__(self, *, settings: Settings, store: Messages, suppressions: Suppressions,
                 queue: Jobs, resolve_mx: Callable[[str], list[MxHost]],
                 connector: Connector, signer_for: Callable[[str], DkimSigner | None],
                 return_path: Callable[[str, int], str],
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 tls_policy_for: Callable[[str], TlsPolicy] = no_policy,
                 fetch_upload: Callable[[str], bytes] | None = None,
                 policy_wait: float = POLICY_WAIT, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 suspensions: Suspensions | None = None,
                 count_by: Callable[[str, int, Mapping[str, str]], None] = lambda name, n, dims: None,
                 slots: Slots | None = None,
                 reputation: Reputation | None = None, paused: PauseCheck | None = None
                 ) -> None:
        # `queue` takes every job this service queues again (a hop, a reschedule): the retry
        # queue (bootstrap.retry_queue), so retries are never behind a backlog of new mail.
        self.settings, self.store, self.suppressions, self.queue = settings, store, suppressions, queue
        self.resolve_mx, self.connector, self.signer_for = resolve_mx, connector, signer_for
        self.return_path, self.clock, self.rng, self.count = return_path, clock, rng, count
        self.tls_policy_for = tls_policy_for
        self.fetch_upload = fetch_upload  # uploaded attachments' bytes (S3 uploads/<id>)
        self.policy_wait, self.sleep = policy_wait, sleep
        # The reputation breaker (issue 11 item 6): hard bounces counted; paused mail held.
        self.reputation, self.paused = reputation, paused
        # MTA-STS lookups run in their own threads: one that stalls past `policy_wait` is left
        # behind, and must not hold up asyncio.run()'s shutdown of the default executor.
        self._policy_threads = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="mta-sts")
        # Domains whose MX was too slow (SLOW_OPEN, SLOW_TRANSACTION), until when, found here or
        # read from the store (another container found it): new mail to them goes straight to
        # the slow lane, without paying SLOW_OPEN or SLOW_TRANSACTION again.
        self._slow_domains: dict[str, float] = {}
        # Until when the store's "not slow" answer for a domain holds here (domain.known_slow),
        # and the store reads in flight (one per domain; concurrent jobs share it).
        self._slow_checked: dict[str, float] = {}
        self._slow_reads: dict[str, asyncio.Future[bool]] = {}
        # ---- throttle (issue 11): providers suspended for our IP (delivery/throttling.py) ----
        # `suspensions`: the fleet-wide record (None: this container's memory only);
        # `count_by`: metrics with dimensions (Throttled, Suspended per provider).
        self.suspensions, self.count_by = suspensions, count_by
        self._suspensions: dict[str, Suspension] = {}  # provider -> the latest known here
        self._suspension_checked: dict[str, float] = {}  # provider -> "not suspended" holds until
        self._suspension_reads: dict[str, asyncio.Future[Suspension | None]] = {}
        self._provider_sessions: dict[str, list[Any]] = {}  # provider -> sessions opened (the ramp)
        self._provider_opening: dict[str, int] = {}  # provider -> sessions being opened (the ramp)
        # ---- slots (issue 11): fleet-wide connection slots, rates and warm-up (shaping.py) ----
        # `slots`: the store's shared counters (None: no fleet-wide shaping); `count_by`:
        # metrics with dimensions (ConnectionsInUse, DeferredByShaping, DeferredByWarmup).
        # The fleet-wide connection cap follows the ramp after a suspension (suspension.py).
        self.shaper = Shaper(slots, settings, clock=lambda: self.clock(), rng=lambda: self.rng(),
                             count_by=lambda name, n, dims: self.count_by(name, n, dims),
                             cap_for=lambda ip, provider, limits, now: connection_cap(
                                 self._suspensions.get(provider), limits, now, settings.throttle_ramp))

    MX_SESSION_LIMIT = 2  # Postfix smtp_mx_session_limit: sessions opened per attempt and domain
    # Head-of-line blocking: the invocation returns when every job of its batch is done, so a
    # slow receiver would set the pace of everyone's mail. One domain's recipients get this many
    # seconds of a job (starting a new transaction); the rest are released, after a release
    # delay, to another invocation (the slow domain gets a turn, it does not get the batch).
    DOMAIN_SLICE = 60.0
    # On the new-mail lane a session must open (connect, greeting, EHLO, STARTTLS) within this
    # many seconds; a slower MX has its recipients handed, at once and with no attempt counted,
    # to a job on the slow lane (the retry queue, its own senders), where no such limit applies.
    # Healthy MX hosts open in about a second, even across the internet with TLS.
    SLOW_OPEN = 8.0
    # Seconds a slow domain is remembered (straight to the slow lane), by the container that
    # found it and, through the store (Messages.mark_slow), by every other sender.
    SLOW_MEMORY = 600.0
    # Before its first transaction to a domain, a new-mail container with no answer of its own
    # asks the store (Messages.slow_until); "not slow" holds this many seconds, so a container
    # reads at most once per domain per SLOW_RECHECK. Short, because the containers that start
    # together all ask at once, before anyone can have found the domain slow: a long negative
    # answer would hide the first discovery from them.
    SLOW_RECHECK = 5.0
    # The longest a new-mail job waits on the store for the mark (a read, or the write after a
    # discovery); a slower or failed read counts as "not slow", a write is then left to finish.
    SLOW_STORE_WAIT = 1.0
    # The same for a receiver that opens fast and then answers slowly (RCPT, DATA, a peer that
    # stops reading the content): on the new-mail lane a transaction must reach its final dot
    # (RSET, MAIL, RCPT, the 354, the content) within this many seconds, else the transport
    # abandons it before the dot (SlowPeerError, nothing delivered) and this recipient and the
    # domain's remaining ones go to the slow lane, with no attempt counted. The wait for the
    # final reply is never cut (abandoning it is the RFC 1047 duplicate): a transaction slower
    # than this in all (a content scan before the final reply) completes and is recorded, and
    # marks the domain slow, so the rest go to the slow lane between transactions. A healthy
    # transaction takes about a second.
    SLOW_TRANSACTION = 8.0
    # Before the first session to a provider, a container with no answer of its own asks the
    # store whether it is suspended (throttling.known_suspension); "not suspended" holds this
    # many seconds. Short for the same reason as SLOW_RECHECK.
    SUSPENSION_RECHECK = 5.0
    # Issue 15 item 3: at most this many domain deliveries (one session each at a time) in flight
    # at once in one invocation, whatever its jobs' recipients (SessionPool.bounded): a batch of
    # SenderBatchSize jobs to many domains stays well under Lambda's 1,024 file descriptors.
    # Per site, shaping's SESSIONS_PER_DOMAIN bounds it further.
    DOMAINS_IN_FLIGHT = 100
    STORE_THREADS = 32  # threads for the store's blocking calls in one invocation (_run_batch)


    # ---- the SQS batch --------------------------------------------------------------------
    def handle_sqs_event(self, event: dict, remaining_ms: Callable[[], int]) -> dict:
        """Lambda SQS event -> {"batchItemFailures": [...]} (ReportBatchItemFailures)."""
        deadline = self.clock() + remaining_ms() / 1000.0 - 5.0
        records = event.get("Records", [])
        failed = asyncio.run(self._run_batch(records, deadline))
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    async def _run_batch(self, records: list[dict], deadline: float) -> list[str]:
        # The store's calls (asyncio.to_thread) on STORE_THREADS threads, not the default
        # executor's min(32, cpus + 4): 6 in a 1 GB Lambda, too few for a batch's jobs waiting on
        # DynamoDB at once (issue 15 item 3). asyncio.run shuts it down with the batch.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(self.STORE_THREADS, thread_name_prefix="store"))
        pool = SessionPool(in_flight=self.DOMAINS_IN_FLIGHT)
        budget = MemoryBudget(self.settings.sender_memory_budget)
        try:
            outcomes = await asyncio.gather(
                *(self._run_record(r, pool, deadline, budget) for r in records), return_exceptions=True)
        finally:
            await pool.close()
            self.shaper.batch_done()  # no session outlives its batch
        failed = []
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("job failed; left on the queue", exc_info=outcome,
                          extra={"sqs_message_id": record.get("messageId")})
                self.count("JobFailed", 1)
                failed.append(record["messageId"])
        return failed

    async def _run_record(self, record: dict, pool: SessionPool, deadline: float,
                          budget: MemoryBudget | None = None) -> None:
        try:
            job = QueueJob.model_validate_json(record["body"])
        except ValidationError:
            # Not a job we wrote: fail it so that it ends in the DLQ, where it can be read.
            raise ValueError(f"unreadable job body: {record.get('body', '')[:200]!r}") from None
        await self.deliver(job, pool, deadline, budget)

    # ---- one job (the steps are job.py's) ---------------------------------------------------
    async def deliver(self, job: QueueJob, pool: SessionPool, deadline: float,
                      budget: MemoryBudget | None = None) -> None:
        run = JobRun(job, observed=job.token)
        if job.delivered:
            await step.record_carried(self, run)
        now = self.clock()
        if await step.hop(self, run, now):
            return
        stored = await step.load(self, run)
        if stored is None or await step.drop_if_stale(self, run, stored.meta):
            return
        until = step.lifetime_end(self.settings, stored.meta)
        due = step.pick_due(run, stored.recipients, now, until)
        cost = memory_cost(stored.meta) if due else 0
        if budget is not None and cost:
            wait = deadline - self.clock() - self._needs(session=True)
            if not await step.admit(self, run, budget, cost, wait):
                return
            now = self.clock()  # the wait for room may have taken a while
        try:
            await self._deliver_due(run, stored.meta.replace(deliver_until=until), due, now, pool, deadline)
        finally:
            if budget is not None and cost:
                await budget.give(cost)
            # Even when the job fails: whoever it left open must keep a future job.
            await asyncio.to_thread(step.reschedule, self, run)

    async def _deliver_due(self, run: JobRun, meta: Message, due: list[Recipient], now: float,
                           pool: SessionPool, deadline: float) -> None:
        due = await start_due(self, run, meta, due, now)  # scheduled ones at their time (issue 14)
        if not due or await step.hold_if_paused(self, run, meta, due, now):
            return
        lease = max(0.0, deadline - now) + LEASE_MARGIN
        claimed = await step.claim(self, run, due, now, lease)
        if not claimed:
            return
        if now >= meta.deliver_until:  # outlived the message's lifetime (RFC 3463 4.4.7)
            for r in claimed:
                await asyncio.to_thread(step.expire, self, run.job.message_id, r, now)
            return
        active = await step.suppress(self, run, claimed, now)
        if not active:
            return
        record = step.recorder(self, run, meta, now, lease, deadline)
        prepared = await self._prepare(run, meta, active, record)
        if prepared is not None:
            # The sandbox (issue 14): simulated recipients are answered without an MX.
            prepared = await simulator.deliver_simulated(self, run, meta, prepared, record)
        if prepared is not None:
            await self._deliver_domains(run, prepared, pool, deadline, record)

    async def _prepare(self, run: JobRun, meta: Message, active: list[Recipient],
                       record: step.Record) -> Prepared | None:
        """The prepare step (prepare.py). Whatever fails there fails for every recipient alike,
        and becomes a verdict like any other (Postal: unanticipated means transient), so a
        poisoned job defers, then expires: it never leaves its recipients open behind a job in
        the DLQ. None when there is nothing to send (the outcomes are recorded)."""
        mid = run.job.message_id
        try:
            prepared = await prepare(mid, meta, active, load_request=self.store.load_request,
                                     signer_for=self.signer_for, fetch_upload=self.fetch_upload)
        except Exception as exc:  # noqa: BLE001 - every failure is judged, none dropped
            log.error("could not prepare the message", exc_info=exc, extra={"message_id": mid})
            run.rcpts = unprepared(active)
            await self._record_all(run.rcpts, judge(exc), record)
            return None
        run.rcpts = prepared.rcpts
        if not prepared.signed:
            log.error("no DKIM key", extra={"message_id": mid, "domain": prepared.sender_domain})
            await self._record_all(run.rcpts, judge(NoSigningKeyError(prepared.sender_domain)), record)
            return None
        return prepared

    async def _record_all(self, rcpts: list[Rcpt], v: Verdict, record: step.Record) -> None:
        for rc in rcpts:
            await record(rc, Result(v, self._attempt(v, None, None, None)))

    async def _deliver_domains(self, run: JobRun, p: Prepared, pool: SessionPool, deadline: float,
                               record: step.Record) -> None:
        """Each domain's recipients at once, in their own sessions; a domain whose work failed
        outside a transaction is settled after the others finish."""
        mid = run.job.message_id
        groups: dict[str, list[Rcpt]] = {}
        for rc in p.rcpts:
            groups.setdefault(rc.domain, []).append(rc)
        parts = await asyncio.gather(*(pool.bounded(
            self._deliver_domain(mid, domain, group, p.data, p.tls_mode, pool, deadline, record,
                                 handoff=run.handed_off if self._new_mail_lane(run.job) else None))
            for domain, group in groups.items()), return_exceptions=True)
        for (domain, group), part in zip(groups.items(), parts, strict=True):
            if not isinstance(part, BaseException):
                continue
            if not isinstance(part, Exception):
                raise part  # cancellation and the like: not ours to judge
            await self._settle_domain(run, domain, group, part, record)

    async def _settle_domain(self, run: JobRun, domain: str, group: list[Rcpt], failure: Exception,
                             record: step.Record) -> None:
        mid = run.job.message_id
        if isinstance(failure, RecordFailed):
            # The store refused a write: the rest of this domain is released by reschedule and
            # queued again after a release delay (nothing was learnt that could be kept).
            log.error("recording an outcome failed", exc_info=failure,
                      extra={"message_id": mid, "recipient_domain": domain})
            return
        # A bug outside the SMTP transaction: a transient verdict (Postal), recorded like
        # any other, so it backs off and eventually expires instead of looping at once.
        log.error("unexpected error delivering to a domain", exc_info=failure,
                  extra={"message_id": mid, "recipient_domain": domain})
        v = judge(failure)
        pending = [rc for rc in group if rc.index not in run.recorded and rc.index not in run.held]
        for rc in pending:
            try:
                await record(rc, Result(v, self._attempt(v, None, None, None)))
            except RecordFailed:
                log.exception("recording an outcome failed", extra={"message_id": mid})
                break

    # ---- one domain -------------------------------------------------------------------------
    def _needs(self, *, session: bool) -> float:
        """Seconds one more transaction needs (plus a connect, when it needs a new session).
        Only the connect is counted for a session: a slow EHLO or STARTTLS is caught by the
        check before the transaction, and the transport checks again before the final dot."""
        t = self.connector.timeouts
        return t.transaction_budget + RECORD_MARGIN + (t.connect if session else 0.0)

    @staticmethod
    def _new_mail_lane(job: QueueJob) -> bool:
        """A job the API (or the sweeper) queued: its run must not wait on a slow receiver. Jobs
        the sender queued (tokens) and slow-lane jobs run on the retry queue's own senders."""
        return job.token is None and not job.slow

    async def _deliver_domain(self, mid: str, domain: str, rcpts: list[Rcpt], data: tuple[bytes, ...],
                              tls_mode: TlsMode, pool: SessionPool, deadline: float, record: step.Record,
                              *, handoff: set[int] | None = None) -> None:
        """One domain's recipients: domain.deliver's steps (route, TLS policy, sessions,
        transactions, records)."""
        await domain_step.deliver(self, mid, domain, rcpts, data, tls_mode, pool, deadline, record,
                                  handoff=handoff)

    def _attempt(self, v: Verdict, mx: str | None, ip: str | None, tls: Any,
                 remote_id: str | None = None, *, sts: dict | None = None) -> dict:
        """One attempt record: time, MX host, IP, TLS details, the command that failed, the
        reply code, the enhanced status and the text (issue 3), plus the MTA-STS policy used."""
        return {k: val for k, val in {
            "at": iso(self.clock()), "mx": mx, "ip": ip,
            "tls": tls.as_dict() if tls is not None else None,
            "command": v.command, "code": v.code, "status": v.status, "text": v.text[:1000],
            "outcome": v.outcome.value, "remote_id": remote_id, "kind": v.kind, "reason": v.reason,
            "mta_sts": sts}.items() if val is not None}

