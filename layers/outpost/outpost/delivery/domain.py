"""One domain's recipients of one message, as named steps (Postal): hand off if known slow,
route (MX), TLS policy (MTA-STS), then per recipient: take or open a session (the session
limit, SLOW_OPEN), transact (SLOW_TRANSACTION, next MX after a soft failure in
mid-transaction), record. DeliveryService (service.py) runs `deliver` for each domain of a
job; the constants it reads (MX_SESSION_LIMIT, DOMAIN_SLICE, SLOW_OPEN, SLOW_MEMORY,
SLOW_TRANSACTION) stay on the service, where tests and the chaos rig override them.

The SMTP side's rules:
- whatever fails outside a transaction is judged like any reply (trouble.judge: unanticipated
  means transient), so those recipients defer and finally expire (4.4.7);
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
  job (released first, so it finds them free), and every container sends new mail for that
  domain straight there for SLOW_MEMORY: the one that found it, and through the store
  (Messages.mark_slow) every other, which asks (Messages.slow_until) before its first
  transaction to a domain it has no answer for; a "not slow" answer holds SLOW_RECHECK, and a
  read that fails or takes over SLOW_STORE_WAIT counts as "not slow" (delivery never waits on
  the mark). The wait for the reply to the final dot is never cut, on any lane (RFC 1047): a
  transaction slow only there completes and is recorded, and the domain's rest go to the slow
  lane between transactions. What a new-mail batch may still spend on a slow receiver: that
  wait, or SLOW_OPEN / SLOW_TRANSACTION, in the containers that meet the domain before one of
  them has marked it (or within SLOW_RECHECK of their last "not slow" answer).
"""
from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import (
    DnsError,
    NoTimeLeftError,
    OutpostError,
    ShapingWaitError,
    SlowPeerError,
    StaleSessionError,
    StsLookupTimeoutError,
    StsMxMismatchError,
)
from ..mx import MxHost
from ..records import Waiting
from ..tls_policy import TlsPolicy
from . import throttling
from .job import Rcpt, Record, Result
from .providers import limits_for, provider_for
from .shaping import SESSIONS_PER_DOMAIN, TURN_WAIT, ShapedSession, SlotForHost
from .single_flight import read_once
from .transport import Session, SessionPool, TlsMode, remote_queue_id
from .trouble import Scope, Verdict, judge, tries_next_mx, unreached

if TYPE_CHECKING:
    from .service import DeliveryService

log = logging.getLogger("outpost.sender")

RECORD_MARGIN = 10.0  # seconds kept after a transaction to record its outcome (with retries)

Reply = tuple[Verdict, str | None]  # a transaction's verdict and the remote queue id
Failure = tuple[Verdict, str | None, str | None]  # a verdict, and the MX host and IP it came from


class Flow(enum.Enum):
    """What a step tells the recipient loop when it has no reply to record."""

    NEXT = "next recipient"  # this one is left unrecorded (no time left): released, requeued
    STOP = "stop"  # the domain is done (recorded, released or handed to the slow lane)
    RETRY = "retry"  # a pooled session was stale: again on a fresh one


def hosts_after(hosts: list[MxHost], name: str, ip: str) -> list[MxHost]:
    """The MX hosts and addresses that come after (name, ip) in the order they are tried."""
    for i, host in enumerate(hosts):
        if host.name == name and ip in host.addresses:
            rest = host.addresses[host.addresses.index(ip) + 1:]
            return ([replace(host, addresses=rest)] if rest else []) + hosts[i + 1:]
    return []


async def mark_slow(svc: DeliveryService, domain: str) -> None:
    """New mail to `domain` goes straight to the slow lane for SLOW_MEMORY: in this container,
    and, through the store, in every other one (which would otherwise each pay SLOW_OPEN or
    SLOW_TRANSACTION to find out). A write that fails, or takes over SLOW_STORE_WAIT, is
    logged and counted, never raised: the mark is an optimisation, delivery does not depend
    on it."""
    known = is_slow(svc, domain)
    until = svc.clock() + svc.SLOW_MEMORY
    svc._slow_domains[domain] = until
    if known:
        return  # already shared, by this container or by the one it learnt it from
    try:
        # Bounded: the caller may hold a delivered recipient it has yet to record.
        await asyncio.wait_for(asyncio.to_thread(svc.store.mark_slow, domain, until), svc.SLOW_STORE_WAIT)
    except Exception:  # noqa: BLE001 - the shared mark is best effort (a timeout included)
        log.warning("could not share a slow domain", exc_info=True, extra={"recipient_domain": domain})
        svc.count("SlowDomainShareFailed", 1)


def is_slow(svc: DeliveryService, domain: str) -> bool:
    """What this container knows (no store read): `domain` is slow until a time to come."""
    return svc._slow_domains.get(domain, 0.0) > svc.clock()


async def known_slow(svc: DeliveryService, domain: str) -> bool:
    """Before the first transaction to `domain` on the new-mail lane: is it known slow, here or
    by another container? With no local answer, the store is asked (one read at a time per
    domain: concurrent jobs wait for the same one); a "not slow" answer is kept SLOW_RECHECK
    seconds, a "slow" one until its mark ends, so a container reads at most once per domain
    per SLOW_RECHECK. A read that fails, or takes over SLOW_STORE_WAIT, counts as not slow:
    delivery never waits on it."""
    if is_slow(svc, domain):
        return True
    if svc._slow_checked.get(domain, 0.0) > svc.clock():
        return False
    try:
        return await read_once(svc._slow_reads, domain, lambda: _read_slow(svc, domain), svc.SLOW_STORE_WAIT)
    except TimeoutError:
        svc.count("SlowDomainReadFailed", 1)
        log.warning("slow-domain read took too long; not slow", extra={"recipient_domain": domain})
        return False


async def _read_slow(svc: DeliveryService, domain: str) -> bool:
    try:
        until = await asyncio.to_thread(svc.store.slow_until, domain)
    except Exception:  # noqa: BLE001 - a failed read counts as "not slow"
        log.warning("could not read a slow domain; not slow", exc_info=True,
                    extra={"recipient_domain": domain})
        svc.count("SlowDomainReadFailed", 1)
        until = None
    now = svc.clock()
    svc._slow_checked[domain] = now + svc.SLOW_RECHECK
    if until is None or until <= now:
        return False
    svc._slow_domains[domain] = max(until, svc._slow_domains.get(domain, 0.0))
    return True


def hand_off_if_slow(svc: DeliveryService, mid: str, domain: str, rest: list[Rcpt], handoff: set[int]) -> bool:
    """On the new-mail lane, between two transactions: when the domain is known slow (its
    last transaction here, or another job's in this container, took over SLOW_TRANSACTION,
    or was abandoned before its dot), hand the domain's remaining recipients to the slow
    lane, with no attempt counted."""
    if not is_slow(svc, domain):
        return False
    handoff.update(r.index for r in rest)
    svc.count("SlowLaneHandoff", len(rest))
    log.info("MX too slow in a transaction; the rest handed to the slow lane",
             extra={"message_id": mid, "recipient_domain": domain, "recipients": len(rest)})
    return True


async def record_each(svc: DeliveryService, rcpts: list[Rcpt], v: Verdict, record: Record,
                      host: str | None = None, ip: str | None = None, *, sts: dict | None = None) -> None:
    for r in rcpts:
        await record(r, Result(v, svc._attempt(v, host, ip, None, sts=sts)))


# ---- before the first session -------------------------------------------------------------
async def route(svc: DeliveryService, domain: str, rcpts: list[Rcpt], record: Record) -> list[MxHost] | None:
    """The domain's MX hosts; None (the outcomes recorded) when the lookup failed."""
    try:
        return await asyncio.to_thread(svc.resolve_mx, domain)
    except DnsError as exc:
        await record_each(svc, rcpts, judge(exc), record)
        return None


@dataclass(frozen=True)
class Routed:
    hosts: list[MxHost]
    tls_mode: TlsMode
    policy: TlsPolicy
    sts: dict | None  # the policy as recorded with each attempt


async def apply_policy(svc: DeliveryService, domain: str, rcpts: list[Rcpt], hosts: list[MxHost],
                       tls_mode: TlsMode, deadline: float, record: Record) -> Routed | None:
    """TLS policy (MTA-STS, RFC 8461 §5). enforce: only the policy's MX hosts, only over TLS
    with a certificate valid for the MX name ("verify"), else defer; testing: deliver as usual
    and record what enforce would have refused (§5, "testing" mode). The lookup counts against
    the invocation's time: it may not leave less than one session and one transaction need,
    and one that takes longer is a recorded transient failure, so it backs off (never a
    release at once, which looped, issue 8 item 5). None when there is nothing to send: no
    time left even to look (released, nothing learnt), or the outcomes are recorded."""
    looked_up = await lookup_policy(svc, domain, deadline)
    if looked_up is None:
        return None
    if isinstance(looked_up, Verdict):
        await record_each(svc, rcpts, looked_up, record)
        return None
    policy = looked_up
    sts = policy.as_dict() if (policy.policy is not None or policy.error) else None
    if policy.policy is not None and policy.mode == "enforce":
        allowed = [h for h in hosts if policy.policy.allows(h.name)]
        if not allowed:
            v = judge(StsMxMismatchError(domain, [h.name for h in hosts], policy.policy.mx))
            await record_each(svc, rcpts, v, record, sts=sts)
            return None
        hosts, tls_mode = allowed, "verify"
    return Routed(hosts, tls_mode, policy, sts)


async def lookup_policy(svc: DeliveryService, domain: str, deadline: float) -> TlsPolicy | Verdict | None:
    """The domain's TLS policy; a transient verdict when the lookup took too long; None
    when there is no time left to start it."""
    spare = deadline - svc.clock() - svc._needs(session=True)
    if spare <= 0:
        return None
    wait = min(svc.policy_wait, spare)
    started = svc.clock()
    loop = asyncio.get_running_loop()
    try:
        policy = await asyncio.wait_for(
            loop.run_in_executor(svc._policy_threads, _tls_policy, svc, domain), wait)
    except TimeoutError:
        svc.count("PolicyLookupTimeout", 1)
        return judge(StsLookupTimeoutError(
            f"the MTA-STS policy lookup for {domain} did not finish in {wait:.0f} s", domain))
    if svc.clock() + svc._needs(session=True) > deadline:
        svc.count("PolicyLookupTimeout", 1)
        return judge(StsLookupTimeoutError(
            f"the MTA-STS policy lookup for {domain} took {svc.clock() - started:.0f} s, "
            "leaving no time to deliver", domain))
    return policy


def _tls_policy(svc: DeliveryService, domain: str) -> TlsPolicy:
    try:
        return svc.tls_policy_for(domain)
    except Exception as exc:  # noqa: BLE001 - MtaSts never raises; a custom policy might
        log.exception("TLS policy lookup failed", extra={"recipient_domain": domain})
        return TlsPolicy(domain, None, f"policy lookup failed: {exc}")


def sts_note(policy: TlsPolicy, session: Session, sts: dict | None) -> dict | None:
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


# ---- one domain ------------------------------------------------------------------------------
async def deliver(svc: DeliveryService, mid: str, domain: str, rcpts: list[Rcpt], data: tuple[bytes, ...],
                  tls_mode: TlsMode, pool: SessionPool, deadline: float, record: Record, *,
                  handoff: set[int] | None = None) -> None:
    """Deliver to one domain's recipients, recording each outcome as soon as it is known.
    A recipient left unrecorded (no time left) is released and requeued by the caller.
    `handoff` (the new-mail lane only): where the indexes of recipients whose MX does not
    open a session within SLOW_OPEN go, for the caller to hand to the slow lane, and those
    still to go after a transaction that did not reach its final dot within SLOW_TRANSACTION
    (abandoned before the dot) or took longer than that in all (completed and recorded)."""
    if handoff is not None and await known_slow(svc, domain):
        handoff.update(r.index for r in rcpts)  # known slow: no need to wait SLOW_OPEN again
        svc.count("SlowLaneHandoff", len(rcpts))
        return
    hosts = await route(svc, domain, rcpts, record)
    if hosts is None:
        return
    # Issue 11: no session to a provider suspended for our IP (here or, through the store, by
    # another container); with every MX host's provider suspended, the recipients wait for it.
    hosts, held = await throttling.unsuspended(svc, hosts)
    if held is not None:
        await throttling.hold(svc, rcpts, held, record)
        return
    routed = await apply_policy(svc, domain, rcpts, hosts, tls_mode, deadline, record)
    if routed is None:
        return
    run = DomainRun(svc, mid, domain, rcpts, data, routed, pool, deadline, record, handoff,
                    slice_end=svc.clock() + svc.DOMAIN_SLICE)
    try:
        for n, r in enumerate(rcpts):
            if await run.recipient(n, r) is Flow.STOP:
                return
    finally:
        if run.session is not None:
            if throttling.ramp_cap(svc, provider_for(run.session.mx_name)) is not None:
                await run.session.close()  # ramping up after a suspension: free the slot
            else:
                pool.give(run.key, run.session)


def site_of(hosts: list[MxHost]) -> str:
    """The pool key's MX set ("site", KumoMTA): the MX hosts by preference, so recipients of
    different domains served by the same MX hosts (many Google Workspace domains) share an open
    session, up to its messages per connection, where per-domain pooling opened one each. What
    stays per domain stays out of it: the slow-lane mark and the MTA-STS policy are looked up
    per recipient domain before a session is taken, and the TLS mode is the key's other half,
    so a session is reused only for a domain whose policy it satisfies: one MX set, one mode
    (an MTA-STS "enforce" domain's set is its policy's hosts only, and its mode "verify": the
    certificate verified for the MX host's name, which is what its policy asks of a session)."""
    return ",".join(f"{h.preference}:{h.name.lower().rstrip('.')}"
                    for h in sorted(hosts, key=lambda h: (h.preference, h.name.lower())))


@dataclass
class DomainRun:
    """The session work for one domain's recipients: the session in hand, the sessions opened
    in this attempt (MX_SESSION_LIMIT), and the failure that ended the last one."""

    svc: DeliveryService
    mid: str
    domain: str
    rcpts: list[Rcpt]
    data: tuple[bytes, ...]
    routed: Routed
    pool: SessionPool
    deadline: float
    record: Record
    handoff: set[int] | None
    slice_end: float
    session: Session | None = None
    opened: int = 0
    last_failure: Failure | None = None
    key: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # Sessions are pooled per site (the MX set), not per domain: see site_of.
        self.key = (site_of(self.routed.hosts), self.routed.tls_mode)

    async def recipient(self, n: int, r: Rcpt) -> Flow | None:
        """One recipient: whether it may start (time, slow lane, the domain's slice), its
        transaction(s), its record. Flow.STOP ends the domain."""
        svc = self.svc
        if svc.clock() + svc._needs(session=False) > self.deadline:
            return Flow.NEXT  # no time left: released and requeued by the caller
        if self.handoff is not None and hand_off_if_slow(svc, self.mid, self.domain, self.rcpts[n:], self.handoff):
            return Flow.STOP  # between transactions: the rest wait on the slow lane, not here
        if n and svc.clock() > self.slice_end:
            # This domain has had its slice of the job: the rest go back to the queue.
            svc.count("DomainSliceRelease", len(self.rcpts) - n)
            log.info("domain time slice used; the rest released",
                     extra={"message_id": self.mid, "recipient_domain": self.domain,
                            "released": len(self.rcpts) - n})
            return Flow.STOP
        if await self.hold_if_suspended(n) is Flow.STOP:
            return Flow.STOP
        outcome = await self.attempt(n, r)
        if isinstance(outcome, Flow):
            return outcome
        if outcome[0].scope is Scope.PROVIDER:
            # A throttle: the provider is suspended for our IP; this recipient is charged the
            # attempt, the domain's rest wait with no attempt (issue 11 item 4).
            suspension = await throttling.suspend(svc, outcome[0])
            await self.record_reply(r, outcome, wait=throttling.waiting(suspension))
            await throttling.hold(svc, self.rcpts[n + 1:], suspension, self.record)
            return Flow.STOP
        await self.record_reply(r, outcome)
        return None

    async def hold_if_suspended(self, n: int) -> Flow | None:
        """Between recipients (this container's memory, no store read): a session to a provider
        suspended since (another job's throttle) is closed; when every MX host's provider is
        suspended, the rest wait for it with no attempt (Flow.STOP)."""
        svc = self.svc
        if self.session is not None and throttling.local_suspension(svc, provider_for(self.session.mx_name)):
            await self.session.close()
            self.session = None
        held = throttling.locally_held(svc, self.routed.hosts)
        if held is None:
            return None
        await throttling.hold(svc, self.rcpts[n:], held, self.record)
        return Flow.STOP

    async def attempt(self, n: int, r: Rcpt) -> Reply | Flow:
        """Recipient n's transaction: on a pooled session, or a fresh one, on the MX hosts it
        may still go to (`route`), in order. A pass after the first only after a pooled session
        turned out stale (a fresh one, never another pooled one that may be just as stale), or
        after a soft failure in mid-transaction moved the recipient to the next MX."""
        route = self.routed.hosts
        for fresh in (False, *[True] * (self.svc.MX_SESSION_LIMIT + 2)):
            if self.session is None and not fresh:
                self.session = self.pool.take(self.key)
                if self.pool.dropped:
                    await self.pool.close_dropped()  # their slots are free from now (shaping)
                if self.session is None and self.svc.shaper.enabled:
                    self.session = await self.turn()
                    if self.handoff is not None and hand_off_if_slow(self.svc, self.mid, self.domain,
                                                                     self.rcpts[n:], self.handoff):
                        # Found slow while this job waited for its turn: the slow lane's now.
                        if self.session is not None:
                            self.pool.give(self.key, self.session)
                            self.session = None
                        return Flow.STOP
            if self.session is None and await self.open_session(n, route) is Flow.STOP:
                return Flow.STOP
            if await self.shaped(n) is Flow.STOP:
                return Flow.STOP
            outcome = await self.transact(n, r)
            if outcome is Flow.RETRY:
                continue
            if isinstance(outcome, Flow):
                return outcome
            after = await self.next_mx(outcome, route)
            if after is None:
                return outcome
            route = after
        return Flow.NEXT  # every pass used: released with the rest

    async def open_session(self, n: int, route: list[MxHost]) -> Flow | None:
        """A fresh session on the first MX of `route` that opens; Flow.STOP (the rest recorded,
        released or handed to the slow lane) when none does, or when the session limit is
        reached. On the new-mail lane the opening must take at most SLOW_OPEN."""
        svc, rest = self.svc, self.rcpts[n:]
        if self.opened >= svc.MX_SESSION_LIMIT and self.last_failure is not None:
            # Postfix smtp_mx_session_limit: this attempt has used its sessions; the rest
            # defer with the reply that ended the last one.
            v, host, ip = self.last_failure
            v = unreached(v, f"session limit of {svc.MX_SESSION_LIMIT} per attempt reached")
            await record_each(svc, rest, v, self.record, host, ip, sts=self.routed.sts)
            return Flow.STOP
        # Fleet-wide shaping (shaping.py): a connection slot for the provider of each MX host
        # tried, moved when a failed host is followed by one at another provider, so the slot
        # is the provider's the session really opens to (SlotForHost).
        holder = None
        if svc.shaper.enabled:
            holder = SlotForHost.begin(svc.shaper, self.key, min(r.waited for r in rest))
        opening = open_first(svc, route, self.routed.tls_mode, self.deadline, holder)
        session: Session | None = None
        try:
            if self.handoff is None:
                session, failure = await opening
            else:
                try:
                    session, failure = await asyncio.wait_for(opening, svc.SLOW_OPEN)
                except TimeoutError:
                    # A slow receiver: not this lane's to wait on (head-of-line).
                    await mark_slow(svc, self.domain)
                    self.handoff.update(rc.index for rc in rest)
                    svc.count("SlowLaneHandoff", len(rest))
                    log.info("MX too slow to open a session; handed to the slow lane",
                             extra={"message_id": self.mid, "recipient_domain": self.domain, "recipients": len(rest)})
                    return Flow.STOP
        finally:
            if holder is not None and session is None:
                await holder.drop()  # no session came of it: the slot is free again
        if session is not None and holder is not None and holder.slot is not None:
            session = ShapedSession(session, holder.slot, svc.shaper, self.key)
        if session is None and holder is not None and holder.waiting is not None:
            await self.wait_rest(n, holder.waiting)  # no room at the provider: wait, no attempt
            return Flow.STOP
        if session is None:
            await self.none_opened(rest, failure)
            return Flow.STOP  # (no failure: no time left to connect; released and requeued)
        self.session = session
        self.opened += 1
        return None

    async def none_opened(self, rest: list[Rcpt], failure: Failure | None) -> None:
        """No MX opened a session: record why (no failure: no time left; they are released)."""
        svc = self.svc
        if failure is not None and failure[0].scope is Scope.PROVIDER:
            # A throttle at the greeting: the first recipient is charged the attempt, the
            # rest wait with no attempt (issue 11 item 4).
            v, host, ip = failure
            suspension = await throttling.suspend(svc, v)
            await self.record(rest[0], Result(v, svc._attempt(v, host, ip, None, sts=self.routed.sts),
                                              wait=throttling.waiting(suspension)))
            await throttling.hold(svc, rest[1:], suspension, self.record)
        elif failure is not None:
            # Every MX failed at host level: a transient failure for the recipient.
            v, host, ip = failure
            await record_each(svc, rest, unreached(v), self.record, host, ip, sts=self.routed.sts)

    async def turn(self) -> Session | None:
        """With shaping on, a container keeps at most shaping.SESSIONS_PER_DOMAIN sessions per
        site (the pool key: one MX set, one TLS mode) open at once: beyond them, a job waits
        (at most shaping.TURN_WAIT, and never into the time it needs) for one of them to come
        back to the pool idle, or to close, rather than take one more of the fleet's slots. So
        the concurrent jobs of a batch share sessions, and a session's two slot writes are
        shared by the messages it carries (bench/shaping_cost.py). On the new-mail lane the
        wait ends when the domain is found slow (the caller hands off). None: no idle session came; open one."""
        svc = self.svc
        wait = min(TURN_WAIT, self.deadline - svc.clock() - svc._needs(session=True))
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while (svc.shaper.local_open(self.key) >= self.site_cap() and loop.time() < end
               and not (self.handoff is not None and is_slow(svc, self.domain))):
            await asyncio.sleep(0.02)
            session = self.pool.take(self.key)
            if self.pool.dropped:
                await self.pool.close_dropped()
            if session is not None:
                return session
        return None

    async def shaped(self, n: int) -> Flow | None:
        """Before a transaction on a shaped session: the lease renewed, a message in hand from
        the provider's rate and warm-up windows; Flow.STOP (the session closed, the rest
        waiting) when they are full."""
        session = self.session
        if not isinstance(session, ShapedSession):
            return None
        w = await self.svc.shaper.before_send(session.slot, min(r.waited for r in self.rcpts[n:]))
        if w is None:
            return None
        await session.close()
        self.session = None
        await self.wait_rest(n, w)
        return Flow.STOP

    async def wait_rest(self, n: int, w: Waiting) -> None:
        """Shaping has no room (shaping.py): this recipient and the domain's remaining ones
        wait until `w.until`, with no attempt counted (job._wait)."""
        rest = self.rcpts[n:]
        v = judge(ShapingWaitError(w.reason, w.provider, w.detail))
        self.svc.count_by("DeferredByWarmup" if w.reason == "warmup" else "DeferredByShaping", len(rest),
                          {"provider": w.provider})
        log.info("no room for the provider; recipients wait",
                 extra={"message_id": self.mid, "recipient_domain": self.domain, "provider": w.provider,
                        "reason": w.reason, "until": w.until, "recipients": len(rest)})
        for rc in rest:
            await self.record(rc, Result(v, None, wait=w))

    async def transact(self, n: int, r: Rcpt) -> Reply | Flow:
        """One transaction on the session in hand. On the new-mail lane it must reach its final
        dot within SLOW_TRANSACTION, and one that took longer in all marks the domain slow."""
        svc, session = self.svc, self.session
        assert session is not None
        try:
            started = asyncio.get_running_loop().time()
            outcome = await transact(svc, session, self.mid, r, self.data, self.deadline,
                                     dot_within=None if self.handoff is None else svc.SLOW_TRANSACTION)
            if self.handoff is not None and asyncio.get_running_loop().time() - started > svc.SLOW_TRANSACTION:
                # Slow only at the final reply: completed and recorded as usual (never an
                # abandoned wait after the dot); the rest go at the next turn.
                await mark_slow(svc, self.domain)
            return outcome
        except SlowPeerError as exc:
            # The new-mail lane's limit ran out before the final dot: the transport abandoned
            # the transaction and closed the session, so nothing was delivered. No verdict and
            # no attempt: this recipient and the domain's remaining ones wait on the slow lane,
            # not in this batch (head-of-line).
            log.info("transaction abandoned before the final dot; handed to the slow lane",
                     extra={"message_id": self.mid, "recipient_domain": self.domain, "mx": session.mx_name,
                            "command": exc.command})
            self.session = None
            # Marked slow before the slot is freed: jobs waiting for a turn must see the mark
            # when they see the session gone (else each opens one and pays the limit again).
            await mark_slow(svc, self.domain)
            if isinstance(session, ShapedSession):
                await session.abandon()  # the transport closed it: free its slot, no QUIT
            if self.handoff is None or not hand_off_if_slow(svc, self.mid, self.domain, self.rcpts[n:],
                                                            self.handoff):
                raise  # pragma: no cover - only the new-mail lane passes a limit
            return Flow.STOP
        except NoTimeLeftError:
            # Abandoned before the final dot (the connection is closed): nothing was
            # delivered, the recipient is released with the rest.
            log.info("no time left for the end of data; released", extra={"message_id": self.mid})
            await session.close()
            self.session = None
            return Flow.NEXT
        except StaleSessionError as exc:
            log.info("reused connection was stale; reconnecting",
                     extra={"mx": session.mx_name, "detail": str(exc)})
            self.session = None
            if isinstance(session, ShapedSession):
                await session.abandon()  # the transport closed it: free its slot, no QUIT
            return Flow.RETRY

    async def next_mx(self, outcome: Reply, route: list[MxHost]) -> list[MxHost] | None:
        """Postfix smtp_trouble.c: a soft failure in mid-transaction on an MX that is not the
        last one moves the recipient to the next MX, in this attempt (within the session limit
        and the time left). The MX hosts after this one when it does (the session closed),
        else None."""
        svc, session = self.svc, self.session
        assert session is not None
        after = hosts_after(route, session.mx_name, session.ip)
        if not (after and tries_next_mx(outcome[0]) and self.opened < svc.MX_SESSION_LIMIT
                and svc.clock() + svc._needs(session=True) <= self.deadline):
            return None
        log.info("soft failure in mid-transaction; trying the next MX",
                 extra={"message_id": self.mid, "mx": session.mx_name, "ip": session.ip,
                        "smtp_code": outcome[0].code, "status": outcome[0].status,
                        "command": outcome[0].command})
        svc.count("NextMxAfterSoftFailure", 1)
        self.last_failure = (outcome[0], session.mx_name, session.ip)
        await session.close()
        self.session = None
        return after

    async def record_reply(self, r: Rcpt, outcome: Reply, wait: Waiting | None = None) -> None:
        """Record the recipient's reply; a host-level verdict or a throttle, or a session the
        server closed, ends the session (and is the failure the session limit defers with)."""
        session = self.session
        if session is None:  # pragma: no cover - a transaction's reply comes with its session
            raise RuntimeError("a reply without a session")
        verdict, remote = outcome
        note = sts_note(self.routed.policy, session, self.routed.sts)
        attempt = self.svc._attempt(verdict, session.mx_name, session.ip, session.tls, remote, sts=note)
        if verdict.scope in (Scope.HOST, Scope.PROVIDER) or not session.is_open:
            self.last_failure = (verdict, session.mx_name, session.ip)
            await session.close()
            self.session = None
        elif isinstance(session, ShapedSession) and self.svc.shaper.spent(session.slot):
            # Its messages per connection carried (Limits.per_connection): QUIT, and the next
            # recipient opens a new session (with a slot of its own). Not a failure.
            await session.close()
            self.session = None
        await self.record(r, Result(verdict, attempt, wait=wait))

    def site_cap(self) -> int:
        """This container's sessions per site with shaping on (turn): SESSIONS_PER_DOMAIN, or the
        fleet's connection cap for the site's provider (its primary MX host's) when that is lower,
        so a job waits for one of its container's sessions rather than be deferred by its own
        fleet's cap (issue 15 item 3)."""
        provider = provider_for(self.routed.hosts[0].name) if self.routed.hosts else ""
        return max(1, min(SESSIONS_PER_DOMAIN, limits_for(provider, self.svc.settings.shaping).connections))


# ---- sessions and transactions --------------------------------------------------------------
async def open_first(svc: DeliveryService, hosts: list[MxHost], tls_mode: TlsMode, deadline: float,
                     shaped: SlotForHost | None = None) -> tuple[Session | None, Failure | None]:
    """Try each MX host and address in order; host-level failures move on (RFC 5321 §5.1),
    for at most settings.mx_address_limit addresses in all (Postfix smtp_mx_address_limit).

    (None, None) when there is no time left to try the next address: no host has failed
    for the recipient then, so it is not charged an attempt; likewise when the provider is
    ramping up after a suspension and has no connection slot free (issue 11), or when
    fleet-wide shaping has no room at the provider of the next host (`shaped.waiting` says
    until when: the recipients wait, with no attempt).
    """
    reserved: list[str] = []  # providers whose ramp slot this opening holds (throttling.ramp_slot)
    try:
        return await _open_first(svc, hosts, tls_mode, deadline, reserved, shaped)
    finally:
        for provider in reserved:
            throttling.slot_done(svc, provider)


async def _open_first(svc: DeliveryService, hosts: list[MxHost], tls_mode: TlsMode, deadline: float,
                      reserved: list[str], shaped: SlotForHost | None = None) -> tuple[Session | None, Failure | None]:
    last: Failure | None = None
    tried = 0
    for host in hosts:
        provider = provider_for(host.name)
        if throttling.local_suspension(svc, provider) is not None:
            continue  # suspended since the route was checked (issue 11)
        if not await throttling.ramp_slot(svc, provider):
            return None, None  # ramping up after a suspension, no slot: released, no attempt
        reserved.append(provider)
        if shaped is not None and not await shaped.take(host.name):
            return None, None  # no room at this host's provider: the recipients wait (shaped.waiting)
        for ip in host.addresses:
            if tried >= svc.settings.mx_address_limit:
                log.info("MX address limit reached", extra={"limit": svc.settings.mx_address_limit})
                return None, last
            # Connect, EHLO, STARTTLS, EHLO again, then one transaction and its record:
            # no connect that cannot carry a transaction in time.
            if svc.clock() + svc._needs(session=True) > deadline:
                log.info("no time left to try the next MX", extra={"mx": host.name, "ip": ip})
                return None, None
            tried += 1
            try:
                session = await svc.connector.open(
                    host.name, ip, tls_mode,
                    time_left=lambda: deadline - svc.clock() - svc._needs(session=False))
                throttling.opened(svc, provider, session)
                return session, None
            except Exception as exc:  # noqa: BLE001 - every failure is judged, none dropped
                last = (judge(exc, throttling.judged_as(svc, provider), host=host.name), host.name, ip)
                if last[0].scope is Scope.PROVIDER:
                    # A throttle at the greeting: the provider's answer for all its hosts.
                    return None, last
                if not isinstance(exc, OutpostError):
                    # Postal: unanticipated means transient, but it must be seen.
                    log.exception("unexpected error opening an SMTP session",
                                  extra={"mx": host.name, "ip": ip})
            log.info("MX host failed", extra={"mx": host.name, "ip": ip, "status": last[0].status,
                                               "detail": last[0].text})
    return None, last


async def transact(svc: DeliveryService, session: Session, mid: str, r: Rcpt, data: tuple[bytes, ...],
                   deadline: float, *, dot_within: float | None = None) -> Reply:
    """One transaction, judged. StaleSessionError, NoTimeLeftError and SlowPeerError pass
    through: they are no outcome for the recipient (the caller reconnects, releases it, or
    hands it to the slow lane). `dot_within`: the lane's limit up to the final dot."""
    provider = provider_for(session.mx_name)
    try:
        # The reply to the final dot is awaited as long as the invocation allows (RFC 5321
        # §4.5.3.2.6 says 10 minutes), keeping RECORD_MARGIN to record it.
        reply = await session.send(svc.return_path(mid, r.index), r.smtp_addr, data,
                                   envid=mid, utf8=r.utf8,
                                   time_left=lambda: deadline - svc.clock() - RECORD_MARGIN,
                                   dot_within=dot_within)
        return judge(reply, throttling.judged_as(svc, provider), host=session.mx_name), remote_queue_id(reply.text)
    except (StaleSessionError, NoTimeLeftError, SlowPeerError):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is judged, none dropped
        v = judge(exc, throttling.judged_as(svc, provider), host=session.mx_name)
        if not isinstance(exc, OutpostError):
            log.exception("unexpected error in an SMTP transaction", extra={"message_id": mid})
        if v.after_dot:
            # The documented window (RFC 1047): the retry may deliver a second copy.
            svc.count("EndOfDataUnanswered", 1)
        return v, None
