"""The sender's side of provider suspensions (issue 11 item 4): what this container knows, what
it asks the store, what it writes after a throttle, and how the waiting recipients are
deferred. The policy (how long, what level, the ramp) is suspension.py's; the verdict
(what is a throttle) trouble.py's.

Modelled on the slow-lane memory (domain.py `known_slow`): before the first session to a
provider, a container with no answer of its own asks the store (one read in flight per
provider); a "not suspended" answer holds SUSPENSION_RECHECK seconds, a suspension until it
ends; a read that fails or takes over SLOW_STORE_WAIT counts as "not suspended" (delivery
never waits on the store). Between recipients only this container's memory is consulted, so
a throttle met by one job holds every other job of the batch at once, and every other
container within one job (its next store read).

After a suspension the provider ramps up from one connection (suspension.connection_cap).
Until the fleet-wide connection limiter (shaping.py) enforces it, each container does, for
its own sessions: a session needs a slot under the cap (waiting at most RAMP_WAIT for one,
else its recipients are released with no attempt, and requeued after a release delay), and
a session to a ramping provider is closed after its domain's turn rather than kept idle in
the pool, so the next job gets the slot.

Recipients held by a suspension are deferred with no attempt counted, due when it ends (plus
a little jitter), and `waiting` says why (GET /v1/messages/{id}); the one recipient whose
transaction met the throttle reply is charged that attempt. One job per message carries
them there (job.py reschedule; SQS delays stop at 15 minutes, longer waits hop), never a
loop of requeues.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..clock import iso
from ..mx import MxHost
from ..records import Suspension, Waiting
from .job import Rcpt, Record, Result
from .providers import limits_for, provider_for
from .single_flight import read_once
from .suspension import DEFAULT_IP, Policy, connection_cap, forget_at, is_suspended, next_suspension
from .trouble import Outcome, Scope, Verdict

if TYPE_CHECKING:
    from .service import DeliveryService

log = logging.getLogger("outpost.sender")


def sending_ip(svc: DeliveryService) -> str:
    return svc.settings.sender_ip or DEFAULT_IP


def policy(svc: DeliveryService) -> Policy:
    return Policy(svc.settings.throttle_backoff, svc.settings.throttle_ramp)


def local_suspension(svc: DeliveryService, provider: str) -> Suspension | None:
    """What this container knows (no store read): the provider's suspension, if it still runs."""
    s = svc._suspensions.get(provider)
    return s if is_suspended(s, svc.clock()) else None


def _remember(svc: DeliveryService, s: Suspension | None) -> None:
    if s is None:
        return
    known = svc._suspensions.get(s.provider)
    if known is None or s.until >= known.until:
        svc._suspensions[s.provider] = s


async def known_suspension(svc: DeliveryService, provider: str) -> Suspension | None:
    """The provider's running suspension, here or in the store; None if it is not suspended
    (or the store could not say in time)."""
    s = local_suspension(svc, provider)
    if s is not None:
        return s
    if svc.suspensions is None or svc._suspension_checked.get(provider, 0.0) > svc.clock():
        return None
    try:
        await read_once(svc._suspension_reads, provider, lambda: _read(svc, provider), svc.SLOW_STORE_WAIT)
    except TimeoutError:
        svc.count("SuspensionReadFailed", 1)
        log.warning("suspension read took too long; not suspended", extra={"provider": provider})
        return None
    return local_suspension(svc, provider)


async def _read(svc: DeliveryService, provider: str) -> Suspension | None:
    """One store read; the answer kept here (a past suspension too: the ramp needs it)."""
    assert svc.suspensions is not None
    try:
        s = await asyncio.to_thread(svc.suspensions.suspension, sending_ip(svc), provider)
    except Exception:  # noqa: BLE001 - a failed read counts as "not suspended"
        log.warning("could not read a provider's suspension; not suspended", exc_info=True,
                    extra={"provider": provider})
        svc.count("SuspensionReadFailed", 1)
        s = None
    # A failed read too: "not suspended" holds until the recheck (no read per job while the
    # store is failing).
    svc._suspension_checked[provider] = svc.clock() + svc.SUSPENSION_RECHECK
    _remember(svc, s)
    return s


async def suspend(svc: DeliveryService, v: Verdict) -> Suspension:
    """A throttle reply (a PROVIDER verdict): suspend the provider for this IP, in this
    container at once and through the store for every other. The level grows once however
    many containers are throttled together (a conditional write on the record read). A store
    that fails is logged and counted; the suspension still holds here."""
    provider, now, pol = v.provider or "unknown", svc.clock(), policy(svc)
    svc.count("Throttled", 1)
    svc.count_by("Throttled", 1, {"provider": provider})
    prev = replaces = svc._suspensions.get(provider)
    if not is_suspended(prev, now) and svc.suspensions is not None:
        try:
            # The record to replace is the store's (a conditional write on it), whatever this
            # container remembers; the level counts from the later of the two.
            replaces = await asyncio.wait_for(asyncio.to_thread(
                svc.suspensions.suspension, sending_ip(svc), provider), svc.SLOW_STORE_WAIT)
            if replaces is not None and (prev is None or replaces.until >= prev.until):
                prev = replaces
        except Exception:  # noqa: BLE001 - best effort; this container's memory decides then
            log.warning("could not read a provider's suspension", exc_info=True, extra={"provider": provider})
            svc.count("SuspensionReadFailed", 1)
    new = next_suspension(prev, sending_ip(svc), provider, v.backoff, v.diagnostic, now, pol)
    if new is None:
        assert prev is not None
        _remember(svc, prev)
        return prev
    won = True
    if svc.suspensions is not None:
        try:
            won = await asyncio.wait_for(asyncio.to_thread(
                svc.suspensions.suspend, new, replaces=replaces, forget_at=forget_at(new, pol)), svc.SLOW_STORE_WAIT)
            if not won:
                winner = await asyncio.wait_for(asyncio.to_thread(
                    svc.suspensions.suspension, sending_ip(svc), provider), svc.SLOW_STORE_WAIT)
                new = winner if winner is not None and is_suspended(winner, now) else new
        except Exception:  # noqa: BLE001 - best effort: the suspension holds here regardless
            log.warning("could not share a provider's suspension", exc_info=True, extra={"provider": provider})
            svc.count("SuspensionShareFailed", 1)
    _remember(svc, new)
    if won:
        log.warning("provider throttled our IP; suspended",
                    extra={"provider": provider, "ip": sending_ip(svc), "level": new.level,
                           "until": iso(new.until), "smtp_code": v.code, "status": v.status, "detail": v.text})
    return new


def waiting(s: Suspension) -> Waiting:
    return Waiting("suspended", s.provider, s.until, s.reply)


def held_verdict(s: Suspension) -> Verdict:
    """The outcome of a recipient held, with no attempt, by its provider's suspension. RFC
    3463 X.4.5 (mail system congestion): the destination asked us to slow down."""
    return Verdict(Outcome.TRANSIENT, Scope.PROVIDER, "4.4.5",
                   f"{s.provider} is suspended for this sending IP until {iso(s.until)} "
                   f"after a throttle reply: {s.reply}", provider=s.provider)


async def hold(svc: DeliveryService, rcpts: Iterable[Rcpt], s: Suspension, record: Record) -> None:
    """Defer these recipients until the suspension ends, with no attempt counted."""
    v, w = held_verdict(s), waiting(s)
    n = 0
    for r in rcpts:
        await record(r, Result(v, None, wait=w))
        n += 1
    if n:
        svc.count("Suspended", n)
        svc.count_by("Suspended", n, {"provider": s.provider})


def providers_of(hosts: Iterable[MxHost]) -> list[str]:
    out: list[str] = []
    for h in hosts:
        p = provider_for(h.name)
        if p not in out:
            out.append(p)
    return out


def judged_as(svc: DeliveryService, provider: str) -> str | None:
    """The provider `judge` is told about: none when shaping is off (OUTPOST_SHAPING_ENABLED=
    false, the sender as before issue 11), so a throttle reply is an ordinary transient one
    and no provider is suspended."""
    return provider if svc.settings.shaping_enabled else None


async def unsuspended(svc: DeliveryService, hosts: list[MxHost]) -> tuple[list[MxHost], Suspension | None]:
    """The MX hosts whose provider is not suspended (asking the store when this container has
    no answer), and, when there are none, the suspension that ends first. Shaping off: all,
    with no store read."""
    if not svc.settings.shaping_enabled:
        return hosts, None
    held: dict[str, Suspension] = {}
    for p in providers_of(hosts):
        s = await known_suspension(svc, p)
        if s is not None:
            held[p] = s
    if not held:
        return hosts, None
    left = [h for h in hosts if provider_for(h.name) not in held]
    return left, (None if left else min(held.values(), key=lambda s: s.until))


def locally_held(svc: DeliveryService, hosts: list[MxHost]) -> Suspension | None:
    """Between recipients (no store read): the suspension that holds every one of the hosts'
    providers (the one that ends first), or None when one of them is free."""
    found = [local_suspension(svc, p) for p in providers_of(hosts)]
    if not found or any(s is None for s in found):
        return None
    return min((s for s in found if s is not None), key=lambda s: s.until)


# ---- the ramp after a suspension (this container's sessions) ----------------------------------
RAMP_WAIT = 5.0  # seconds a session waits for a slot under the ramp's cap; then released
_RAMP_POLL = 0.05


def ramp_cap(svc: DeliveryService, provider: str) -> int | None:
    """The provider's connection cap while it ramps up after a suspension (0 while suspended);
    None when no suspension limits it (any more)."""
    s = svc._suspensions.get(provider)
    if s is None:
        return None
    limit = limits_for(provider, svc.settings.shaping).connections
    cap = connection_cap(s, limits_for(provider, svc.settings.shaping), svc.clock(), svc.settings.throttle_ramp)
    return cap if cap < limit else None


def open_sessions(svc: DeliveryService, provider: str) -> int:
    """This container's sessions to `provider` that are open or being opened."""
    live = [s for s in svc._provider_sessions.get(provider, []) if s.is_open]
    svc._provider_sessions[provider] = live
    return len(live) + svc._provider_opening.get(provider, 0)


async def ramp_slot(svc: DeliveryService, provider: str) -> bool:
    """Whether a new session to `provider` may open now (waiting up to RAMP_WAIT for one of
    this container's sessions to it to close). True reserves the slot until `slot_done`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + RAMP_WAIT
    while True:
        cap = ramp_cap(svc, provider)
        if cap is None or open_sessions(svc, provider) < cap:
            svc._provider_opening[provider] = svc._provider_opening.get(provider, 0) + 1
            return True
        if loop.time() >= give_up:
            svc.count("RampRelease", 1)
            log.info("provider ramping up after a suspension; no connection slot, released",
                     extra={"provider": provider, "cap": cap})
            return False
        await asyncio.sleep(_RAMP_POLL)


def opened(svc: DeliveryService, provider: str, session: Any) -> None:
    svc._provider_sessions.setdefault(provider, []).append(session)


def slot_done(svc: DeliveryService, provider: str) -> None:
    """The reserved slot is now an open session (`opened`) or nothing (every address failed)."""
    svc._provider_opening[provider] = max(0, svc._provider_opening.get(provider, 0) - 1)
