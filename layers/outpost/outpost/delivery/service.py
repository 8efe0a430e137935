"""Deliver queued messages: SQS batch -> per-recipient SMTP transactions -> recorded outcomes.

A delivery is a sequence of small named steps (Postal). Per job (job.py): record carried 2xx
replies, hop (wait out a long delay), load, drop a stale job, pick what is due, admit (memory
budget), claim, expire, suppress; prepare (prepare.py: spec, MIME, DKIM); then per domain
(here): route, TLS policy, transact and record (per recipient); reschedule (job.py, per job).
DeliveryService is the orchestrator that bootstrap builds and calls them in that order; job.py
states the invariants of recipients, records and jobs (nothing lost, one current job, release
delays). This module's own rules, for the SMTP side:
- whatever fails while preparing the message (unreadable spec, MIME, signer) or outside a
  transaction is judged like any reply (trouble.judge: unanticipated means transient), so
  those recipients defer and finally expire (4.4.7) instead of stranding behind a job in the
  DLQ; a job fails (stays on the queue, then the DLQ) only when the store itself failed;
- no transaction starts without `transaction_budget` + RECORD_MARGIN left, no connection
  without that plus a connect timeout, and the transport sends no final dot without
  `end_of_data_min` left to hear the reply; the MTA-STS lookup counts against the same time;
- per attempt and domain, at most settings.mx_address_limit addresses are tried and MX_SESSION_LIMIT
  sessions opened (Postfix's smtp_mx_address_limit=5, smtp_mx_session_limit=2), so a dead or
  blackholed domain costs at most 5 connect timeouts; and no new transaction to one domain
  starts after DOMAIN_SLICE of a job (the rest are released), so a slow receiver does not hold
  the batch, and every other domain's mail, for its whole queue;
- on the new-mail lane no job waits on a slow receiver (head-of-line): an MX that does not open
  a session within SLOW_OPEN, or a transaction that has not reached its final dot within
  SLOW_TRANSACTION (RSET, MAIL, RCPT, the 354, the content; abandoned before the dot with the
  connection closed, so the server discards it and nothing was delivered), has this recipient
  and the domain's remaining ones handed, with no attempt counted, to one tokenless slow-lane
  job (released first, so it finds them free), and the container sends new mail for that
  domain straight there for SLOW_MEMORY. The wait for the reply to the final dot is never cut,
  on any lane (RFC 1047): a transaction slow only there completes and is recorded, and the
  domain's rest go to the slow lane between transactions. That wait is the one a new-mail
  batch may still spend on a slow receiver (once per container and domain).
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
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ..clock import iso
from ..config import Settings
from ..errors import (
    DnsError,
    NoSigningKeyError,
    NoTimeLeftError,
    OutpostError,
    SlowPeerError,
    StaleSessionError,
    StsLookupTimeoutError,
    StsMxMismatchError,
)
from ..models import QueueJob
from ..mx import MxHost
from ..records import Message, Recipient
from ..store import Jobs, Messages, Suppressions
from ..tls_policy import TlsPolicy, no_policy
from . import job as step
from .budget import MemoryBudget, memory_cost
from .job import JobRun, Rcpt, RecordFailed, Result
from .prepare import DkimSigner, Prepared, prepare, unprepared
from .transport import Connector, Session, SessionPool, TlsMode, remote_queue_id
from .trouble import Scope, Verdict, judge, tries_next_mx, unreached

__all__ = ["DeliveryService", "MemoryBudget"]

log = logging.getLogger("outpost.sender")

LEASE_MARGIN = 30.0  # seconds a lease outlives the invocation's deadline
RECORD_MARGIN = 10.0  # seconds kept after a transaction to record its outcome (with retries)
POLICY_WAIT = 30.0  # the longest the sender waits for an MTA-STS lookup, whatever tls_policy does

# The per-domain steps below still use the names they had before job.py (issue 9 item 10).
_Rcpt = Rcpt
_Result = Result
_RecordFailed = RecordFailed


def _hosts_after(hosts: list[MxHost], name: str, ip: str) -> list[MxHost]:
    """The MX hosts and addresses that come after (name, ip) in the order they are tried."""
    for i, host in enumerate(hosts):
        if host.name == name and ip in host.addresses:
            rest = host.addresses[host.addresses.index(ip) + 1:]
            return ([replace(host, addresses=rest)] if rest else []) + hosts[i + 1:]
    return []




class DeliveryService:
    def __init__(self, *, settings: Settings, store: Messages, suppressions: Suppressions,
                 queue: Jobs, resolve_mx: Callable[[str], list[MxHost]],
                 connector: Connector, signer_for: Callable[[str], DkimSigner | None],
                 return_path: Callable[[str, int], str],
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 tls_policy_for: Callable[[str], TlsPolicy] = no_policy,
                 fetch_upload: Callable[[str], bytes] | None = None,
                 policy_wait: float = POLICY_WAIT, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                 ) -> None:
        # `queue` takes every job this service queues again (a hop, a reschedule): the retry
        # queue (bootstrap.retry_queue), so retries are never behind a backlog of new mail.
        self.settings, self.store, self.suppressions, self.queue = settings, store, suppressions, queue
        self.resolve_mx, self.connector, self.signer_for = resolve_mx, connector, signer_for
        self.return_path, self.clock, self.rng, self.count = return_path, clock, rng, count
        self.tls_policy_for = tls_policy_for
        self.fetch_upload = fetch_upload  # uploaded attachments' bytes (S3 uploads/<id>)
        self.policy_wait, self.sleep = policy_wait, sleep
        # MTA-STS lookups run in their own threads: one that stalls past `policy_wait` is left
        # behind, and must not hold up asyncio.run()'s shutdown of the default executor.
        self._policy_threads = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="mta-sts")
        # Domains whose MX was too slow to open a session, until when (this container's clock):
        # new mail to them goes straight to the slow lane, without paying SLOW_OPEN again.
        self._slow_domains: dict[str, float] = {}

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
    SLOW_MEMORY = 600.0  # seconds a container remembers a slow domain (straight to the slow lane)
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


    # ---- the SQS batch --------------------------------------------------------------------
    def handle_sqs_event(self, event: dict, remaining_ms: Callable[[], int]) -> dict:
        """Lambda SQS event -> {"batchItemFailures": [...]} (ReportBatchItemFailures)."""
        deadline = self.clock() + remaining_ms() / 1000.0 - 5.0
        records = event.get("Records", [])
        failed = asyncio.run(self._run_batch(records, deadline))
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    async def _run_batch(self, records: list[dict], deadline: float) -> list[str]:
        pool = SessionPool()
        budget = MemoryBudget(self.settings.sender_memory_budget)
        try:
            outcomes = await asyncio.gather(
                *(self._run_record(r, pool, deadline, budget) for r in records), return_exceptions=True)
        finally:
            await pool.close()
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
        if not due:
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
        parts = await asyncio.gather(*(
            self._deliver_domain(mid, domain, group, p.data, p.tls_mode, pool, deadline, record,
                                 handoff=run.handed_off if self._new_mail_lane(run.job) else None)
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

    async def _deliver_domain(self, mid: str, domain: str, rcpts: list[_Rcpt], data: tuple[bytes, ...],
                              tls_mode: TlsMode, pool: SessionPool, deadline: float,
                              record: Callable[[_Rcpt, _Result], Awaitable[None]], *,
                              handoff: set[int] | None = None) -> None:
        """Deliver to one domain's recipients, recording each outcome as soon as it is known.
        A recipient left unrecorded (no time left) is released and requeued by the caller.
        `handoff` (the new-mail lane only): where the indexes of recipients whose MX does not
        open a session within SLOW_OPEN go, for the caller to hand to the slow lane, and those
        still to go after a transaction that did not reach its final dot within SLOW_TRANSACTION
        (abandoned before the dot) or took longer than that in all (completed and recorded)."""
        if handoff is not None and self._slow_domains.get(domain, 0.0) > self.clock():
            handoff.update(r.index for r in rcpts)  # known slow: no need to wait SLOW_OPEN again
            self.count("SlowLaneHandoff", len(rcpts))
            return
        try:
            hosts = await asyncio.to_thread(self.resolve_mx, domain)
        except DnsError as exc:
            v = judge(exc)
            for r in rcpts:
                await record(r, _Result(v, self._attempt(v, None, None, None)))
            return

        # Step: TLS policy (MTA-STS, RFC 8461 §5). enforce: only the policy's MX hosts, only
        # over TLS with a certificate valid for the MX name ("verify"), else defer; testing:
        # deliver as usual and record what enforce would have refused (§5, "testing" mode).
        # The lookup counts against the invocation's time: it may not leave less than one
        # session and one transaction need, and one that takes longer is a recorded transient
        # failure, so it backs off (never a release at once, which looped, issue 8 item 5).
        looked_up = await self._lookup_policy(domain, deadline)
        if looked_up is None:
            return  # no time left even to look: released, nothing learnt
        if isinstance(looked_up, Verdict):
            for r in rcpts:
                await record(r, _Result(looked_up, self._attempt(looked_up, None, None, None)))
            return
        policy = looked_up
        sts = policy.as_dict() if (policy.policy is not None or policy.error) else None
        if policy.policy is not None and policy.mode == "enforce":
            allowed = [h for h in hosts if policy.policy.allows(h.name)]
            if not allowed:
                v = judge(StsMxMismatchError(domain, [h.name for h in hosts], policy.policy.mx))
                for r in rcpts:
                    await record(r, _Result(v, self._attempt(v, None, None, None, sts=sts)))
                return
            hosts, tls_mode = allowed, "verify"

        key = (domain, tls_mode)
        session: Session | None = None
        opened = 0  # sessions opened in this attempt (MX_SESSION_LIMIT)
        last_failure: tuple[Verdict, str | None, str | None] | None = None
        slice_end = self.clock() + self.DOMAIN_SLICE
        try:
            for n, r in enumerate(rcpts):
                if self.clock() + self._needs(session=False) > deadline:
                    continue  # no time left: released and requeued by the caller
                if handoff is not None and self._hand_off_if_slow(mid, domain, rcpts[n:], handoff):
                    return  # between transactions: the rest wait on the slow lane, not here
                if n and self.clock() > slice_end:
                    # This domain has had its slice of the job: the rest go back to the queue.
                    self.count("DomainSliceRelease", len(rcpts) - n)
                    log.info("domain time slice used; the rest released",
                             extra={"message_id": mid, "recipient_domain": domain, "released": len(rcpts) - n})
                    return
                outcome: tuple[Verdict, str | None] | None = None
                route = hosts  # the MX hosts this recipient may still go to, in order
                for fresh in (False, *[True] * (self.MX_SESSION_LIMIT + 2)):
                    # A pass after the first only after a pooled session turned out stale (a
                    # fresh one, never another pooled one that may be just as stale), or after
                    # a soft failure in mid-transaction moved the recipient to the next MX.
                    if session is None and not fresh:
                        session = pool.take(key)
                    if session is None:
                        if opened >= self.MX_SESSION_LIMIT and last_failure is not None:
                            # Postfix smtp_mx_session_limit: this attempt has used its sessions;
                            # the rest defer with the reply that ended the last one.
                            v, host, ip = last_failure
                            v = unreached(v, f"session limit of {self.MX_SESSION_LIMIT} per attempt reached")
                            for rest in rcpts[n:]:
                                await record(rest, _Result(v, self._attempt(v, host, ip, None, sts=sts)))
                            return
                        if handoff is None:
                            session, failure = await self._open(route, tls_mode, deadline)
                        else:
                            try:
                                session, failure = await asyncio.wait_for(
                                    self._open(route, tls_mode, deadline), self.SLOW_OPEN)
                            except TimeoutError:
                                # A slow receiver: not this lane's to wait on (head-of-line).
                                self._slow_domains[domain] = self.clock() + self.SLOW_MEMORY
                                handoff.update(rest.index for rest in rcpts[n:])
                                self.count("SlowLaneHandoff", len(rcpts) - n)
                                log.info("MX too slow to open a session; handed to the slow lane",
                                         extra={"message_id": mid, "recipient_domain": domain,
                                                "recipients": len(rcpts) - n})
                                return
                        if session is None:
                            if failure is None:
                                return  # no time left to connect: released and requeued
                            v, host, ip = failure
                            # Every MX failed at host level: a transient failure for the recipient.
                            v = unreached(v)
                            for rest in rcpts[n:]:
                                await record(rest, _Result(v, self._attempt(v, host, ip, None, sts=sts)))
                            return
                        opened += 1
                    try:
                        started = asyncio.get_running_loop().time()
                        outcome = await self._transact(
                            session, mid, r, data, deadline,
                            dot_within=None if handoff is None else self.SLOW_TRANSACTION)
                        if handoff is not None and asyncio.get_running_loop().time() - started > self.SLOW_TRANSACTION:
                            # Slow only at the final reply: completed and recorded as usual (never
                            # an abandoned wait after the dot); the rest go at the next turn.
                            self._slow_domains[domain] = self.clock() + self.SLOW_MEMORY
                    except SlowPeerError as exc:
                        # The new-mail lane's limit ran out before the final dot: the transport
                        # abandoned the transaction and closed the session, so nothing was
                        # delivered. No verdict and no attempt: this recipient and the domain's
                        # remaining ones wait on the slow lane, not in this batch (head-of-line).
                        log.info("transaction abandoned before the final dot; handed to the slow lane",
                                 extra={"message_id": mid, "recipient_domain": domain, "mx": session.mx_name,
                                        "command": exc.command})
                        session = None
                        self._slow_domains[domain] = self.clock() + self.SLOW_MEMORY
                        if handoff is None or not self._hand_off_if_slow(mid, domain, rcpts[n:], handoff):
                            raise  # pragma: no cover - only the new-mail lane passes a limit
                        return
                    except NoTimeLeftError:
                        # Abandoned before the final dot (the connection is closed): nothing was
                        # delivered, the recipient is released with the rest.
                        log.info("no time left for the end of data; released", extra={"message_id": mid})
                        await session.close()
                        session = None
                        break
                    except StaleSessionError as exc:
                        log.info("reused connection was stale; reconnecting",
                                 extra={"mx": session.mx_name, "detail": str(exc)})
                        session = None
                        continue
                    after = _hosts_after(route, session.mx_name, session.ip)
                    if not (after and tries_next_mx(outcome[0]) and opened < self.MX_SESSION_LIMIT
                            and self.clock() + self._needs(session=True) <= deadline):
                        break
                    # Postfix smtp_trouble.c: a soft failure in mid-transaction on an MX that is
                    # not the last one moves the recipient to the next MX, in this attempt.
                    log.info("soft failure in mid-transaction; trying the next MX",
                             extra={"message_id": mid, "mx": session.mx_name, "ip": session.ip,
                                    "smtp_code": outcome[0].code, "status": outcome[0].status,
                                    "command": outcome[0].command})
                    self.count("NextMxAfterSoftFailure", 1)
                    last_failure = (outcome[0], session.mx_name, session.ip)
                    await session.close()
                    session, outcome, route = None, None, after
                if outcome is None and session is None:
                    continue  # abandoned for lack of time
                if outcome is None or session is None:  # pragma: no cover - a fresh session has no RSET
                    raise RuntimeError("a fresh SMTP session reported itself stale")
                verdict, remote = outcome
                note = self._sts_note(policy, session, sts)
                attempt = self._attempt(verdict, session.mx_name, session.ip, session.tls, remote, sts=note)
                if verdict.scope is Scope.HOST or not session.is_open:
                    last_failure = (verdict, session.mx_name, session.ip)
                    await session.close()
                    session = None
                await record(r, _Result(verdict, attempt))
        finally:
            if session is not None:
                pool.give(key, session)

    def _hand_off_if_slow(self, mid: str, domain: str, rest: list[_Rcpt], handoff: set[int]) -> bool:
        """On the new-mail lane, between two transactions: when the domain is known slow (its
        last transaction here, or another job's in this container, took over SLOW_TRANSACTION,
        or was abandoned before its dot), hand the domain's remaining recipients to the slow
        lane, with no attempt counted."""
        if self._slow_domains.get(domain, 0.0) <= self.clock():
            return False
        handoff.update(r.index for r in rest)
        self.count("SlowLaneHandoff", len(rest))
        log.info("MX too slow in a transaction; the rest handed to the slow lane",
                 extra={"message_id": mid, "recipient_domain": domain, "recipients": len(rest)})
        return True

    async def _lookup_policy(self, domain: str, deadline: float) -> TlsPolicy | Verdict | None:
        """The domain's TLS policy; a transient verdict when the lookup took too long; None
        when there is no time left to start it."""
        spare = deadline - self.clock() - self._needs(session=True)
        if spare <= 0:
            return None
        wait = min(self.policy_wait, spare)
        started = self.clock()
        loop = asyncio.get_running_loop()
        try:
            policy = await asyncio.wait_for(
                loop.run_in_executor(self._policy_threads, self._tls_policy, domain), wait)
        except TimeoutError:
            self.count("PolicyLookupTimeout", 1)
            return judge(StsLookupTimeoutError(
                f"the MTA-STS policy lookup for {domain} did not finish in {wait:.0f} s", domain))
        if self.clock() + self._needs(session=True) > deadline:
            self.count("PolicyLookupTimeout", 1)
            return judge(StsLookupTimeoutError(
                f"the MTA-STS policy lookup for {domain} took {self.clock() - started:.0f} s, "
                "leaving no time to deliver", domain))
        return policy

    def _tls_policy(self, domain: str) -> TlsPolicy:
        try:
            return self.tls_policy_for(domain)
        except Exception as exc:  # noqa: BLE001 - MtaSts never raises; a custom policy might
            log.exception("TLS policy lookup failed", extra={"recipient_domain": domain})
            return TlsPolicy(domain, None, f"policy lookup failed: {exc}")

    @staticmethod
    def _sts_note(policy: TlsPolicy, session: Session, sts: dict | None) -> dict | None:
        """In testing mode, what enforce would have refused (RFC 8461 §5: report, deliver)."""
        if sts is None or policy.policy is None or policy.mode != "testing":
            return sts
        problems = []
        if not policy.policy.allows(session.mx_name):
            problems.append(f"MX {session.mx_name} does not match the policy")
        if session.tls is None:
            problems.append("no TLS")
        elif not session.tls.verified:
            problems.append("certificate did not verify")
        return dict(sts, violation="; ".join(problems)) if problems else sts

    async def _open(self, hosts: list[MxHost], tls_mode: TlsMode, deadline: float
                    ) -> tuple[Session | None, tuple[Verdict, str, str] | None]:
        """Try each MX host and address in order; host-level failures move on (RFC 5321 §5.1),
        for at most settings.mx_address_limit addresses in all (Postfix smtp_mx_address_limit).

        (None, None) when there is no time left to try the next address: no host has failed
        for the recipient then, so it is not charged an attempt.
        """
        last: tuple[Verdict, str, str] | None = None
        tried = 0
        for host in hosts:
            for ip in host.addresses:
                if tried >= self.settings.mx_address_limit:
                    log.info("MX address limit reached", extra={"limit": self.settings.mx_address_limit})
                    return None, last
                # Connect, EHLO, STARTTLS, EHLO again, then one transaction and its record:
                # no connect that cannot carry a transaction in time.
                if self.clock() + self._needs(session=True) > deadline:
                    log.info("no time left to try the next MX", extra={"mx": host.name, "ip": ip})
                    return None, None
                tried += 1
                try:
                    session = await self.connector.open(
                        host.name, ip, tls_mode,
                        time_left=lambda: deadline - self.clock() - self._needs(session=False))
                    return session, None
                except Exception as exc:  # noqa: BLE001 - every failure is judged, none dropped
                    last = (judge(exc), host.name, ip)
                    if not isinstance(exc, OutpostError):
                        # Postal: unanticipated means transient, but it must be seen.
                        log.exception("unexpected error opening an SMTP session",
                                      extra={"mx": host.name, "ip": ip})
                log.info("MX host failed", extra={"mx": host.name, "ip": ip, "status": last[0].status,
                                                   "detail": last[0].text})
        return None, last

    async def _transact(self, session: Session, mid: str, r: _Rcpt, data: tuple[bytes, ...], deadline: float,
                        *, dot_within: float | None = None) -> tuple[Verdict, str | None]:
        """One transaction, judged. StaleSessionError, NoTimeLeftError and SlowPeerError pass
        through: they are no outcome for the recipient (the caller reconnects, releases it, or
        hands it to the slow lane). `dot_within`: the lane's limit up to the final dot."""
        try:
            # The reply to the final dot is awaited as long as the invocation allows (RFC 5321
            # §4.5.3.2.6 says 10 minutes), keeping RECORD_MARGIN to record it.
            reply = await session.send(self.return_path(mid, r.index), r.smtp_addr, data,
                                       envid=mid, utf8=r.utf8,
                                       time_left=lambda: deadline - self.clock() - RECORD_MARGIN,
                                       dot_within=dot_within)
            return judge(reply), remote_queue_id(reply.text)
        except (StaleSessionError, NoTimeLeftError, SlowPeerError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is judged, none dropped
            v = judge(exc)
            if not isinstance(exc, OutpostError):
                log.exception("unexpected error in an SMTP transaction", extra={"message_id": mid})
            if v.after_dot:
                # The documented window (RFC 1047): the retry may deliver a second copy.
                self.count("EndOfDataUnanswered", 1)
            return v, None

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

