"""Fleet-wide shaping per (sending IP, provider) (issue 11 items 2, 3 and 5): connection slots,
messages per connection, message rates and the IP warm-up's daily cap.

Mailbox providers count what one IP does across all of our sender containers, so the counters
live in the store (store.Slots: one item per IP and provider, every change one conditional
write), not in a container:
- a connection slot is a lease (LEASE seconds, renewed before a transaction when less than
  RENEW_AT is left, dropped when the session closes); a killed container's lease expires and
  the next sender that finds the cap full drops it. At most `Limits.connections` leases are
  live (or fewer: `cap_for`, the ramp after a suspension, issue 11 item 4);
- a session is closed (QUIT) after `Limits.per_connection` messages; the next one needs a slot;
- `per_minute` / `per_hour` (when set) and the warm-up's daily cap are fixed windows (the UTC
  minute, hour and day) counting messages taken. A session takes up to BLOCK messages at once
  (with its lease, in the same write) and gives back what it did not send when it closes (in
  the same write as the lease's release), so shaping costs two writes per session, plus one
  per further block, whatever the number of messages the session carries (bench/shaping_cost.py).
  A fixed window lets up to twice its limit through across a window boundary; the providers'
  own limits are per minute and hour too, and BLOCK keeps the overshoot to a block.

When there is no room, the recipient waits (Waiting, reason "shaping" or "warmup"): deferred
with no attempt counted, due again after SLOT_WAIT (a slot: with jitter) or when the window
ends (a rate: the next minute or hour; the warm-up: the next UTC day). A recipient that waits
again waits longer (Waiting.waits counts its consecutive waits): a slot wait doubles up to
SLOT_WAIT_GROWTH times SLOT_WAIT, a rate wait is spread over the next 1, 3, 7... windows (at
most WINDOW_SPREAD seconds past the window's end), so a slot waiter costs about log2 re-queues
instead of one every ~17 s, and a rate backlog fewer than one per window: slot_wait,
window_spread. The slot is the
provider's of the MX host the session is opened to (SlotForHost: moved when the primary fails
and a backup at another provider takes over). The lifetime wins over a
warm-up wait: a recipient still waiting at the end of its message's lifetime expires (4.4.7)
with the warm-up named as its last reply (job._wait), never earlier because of it.

A store that fails, or does not answer within STORE_WAIT, never blocks delivery: the session
goes unshaped (counted, ShapingStoreFailed), as before issue 11, except for the per-connection cap, which is local.
The calls run on a few threads of their own (store_calls.py): a stalled store holds at most
STORE_THREADS of them, and once they are all held past STORE_WAIT (or the queue behind them is
full) a call fails at once (unshaped); a healthy store's bursts queue.
OUTPOST_SHAPING_ENABLED=false turns all of it off (no store calls at all).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..config import Settings
from ..records import SlotState, Waiting
from ..store import Slots
from .providers import Limits, limits_for, provider_for
from .store_calls import StoreCalls
from .transport import Session, TlsInfo
from .trouble import SmtpReply

log = logging.getLogger("outpost.sender")

LEASE = 180.0  # seconds a connection lease lives unrenewed: a killed sender's slot frees after it
RENEW_AT = 90.0  # a lease with less than this left is renewed before the next transaction
BLOCK = 10  # messages taken from the rate and warm-up windows at once (at most per_connection)
SLOT_WAIT = (5.0, 30.0)  # seconds a recipient waits for a connection slot (uniform, jitter)
# Consecutive waits of one recipient grow (Waiting.waits counts them): a slot wait doubles each
# time, up to SLOT_WAIT_GROWTH times SLOT_WAIT; a full rate window's wait ends at a random time
# in the (2^n - 1) windows after it, spread over at most WINDOW_SPREAD seconds. So N slot waiters
# cost about log2 re-queues each, not one every ~17 s; a rate backlog a fifth fewer than one per
# window, for a drain a fifth longer (a wider spread trades more of one for the other). Figures:
# tests/unit/test_shaping_review.py, bench/shaping_cost.py.
SLOT_WAIT_GROWTH = 4
WINDOW_SPREAD = 120.0
# With shaping on, a container opens at most this many sessions per site (the session pool's key:
# an MX set and a TLS mode, domain.site_of) at once; a job beyond them waits up to TURN_WAIT
# seconds for one to come back idle (domain.DomainRun.turn). 5, not 2 (issue 15 item 3): at an
# internet round trip a session carries one message per ~2 RTTs (pipelined), so 2 per site held a
# container to 22.7 msg/s over 10 domains at 200 ms (bench/latency.py), 5 reaches the goal; 5 is
# KumoMTA's connection_limit for Gmail and Outlook, the lowest fleet cap in providers.py, so one
# container never asks a provider for more than the fleet's slots (which the store enforces anyway).
SESSIONS_PER_DOMAIN = 5
TURN_WAIT = 30.0
DEFAULT_IP = "default"  # the sending IP when settings.sender_ip is unknown (suspension.py's too)
# The longest one store call of shaping may take (like DeliveryService.SLOW_STORE_WAIT): a store
# that hangs counts as one that failed (unshaped); a write that lands later is a lease that
# expires (LEASE) or messages that lapse with their window.
STORE_WAIT = 1.0

# The IP warm-up: messages per provider per UTC day, on day 1, 2, ... of OUTPOST_WARMUP_START;
# no cap after the last day. It starts from the published plans' first days (SendGrid's
# "IP warm-up schedule" and Mailgun's: 50, 100, 500, 1,000, 5,000 a day...) and is stretched,
# per provider rather than in all, over 30 days, the order of SES's dedicated-IP automatic
# warm-up (about 45 days for a standard plan), growing about a quarter to a half a day.
WARMUP: tuple[int, ...] = (
    50, 100, 200, 300, 500, 700, 1_000, 1_500, 2_000, 3_000,
    4_000, 5_000, 7_500, 10_000, 12_500, 15_000, 20_000, 25_000, 30_000, 40_000,
    50_000, 60_000, 75_000, 90_000, 110_000, 130_000, 150_000, 175_000, 200_000, 250_000,
)
WARMUP_SOURCE = ("SendGrid and Mailgun published warm-up plans (50, 100, 500, 1000, 5000 a day...), "
                 "stretched per provider to 30 days like SES's dedicated-IP automatic warm-up")


def warmup_day(start: str | None, now: float) -> int | None:
    """Day n (1-based) of the warm-up started on `start` (UTC), or None (off, or not begun)."""
    if not start:
        return None
    today = datetime.fromtimestamp(now, UTC).date()
    n = (today - date.fromisoformat(start)).days + 1
    return n if n >= 1 else None


def warmup_cap(start: str | None, now: float, schedule: Sequence[int] = WARMUP) -> int | None:
    """Messages per provider allowed today by the warm-up; None: no cap (off, or done)."""
    n = warmup_day(start, now)
    if n is None or n > len(schedule):
        return None
    return schedule[n - 1]


@dataclass(frozen=True)
class Window:
    """One counter of messages taken: the UTC minute, hour or day `name` starts with."""

    name: str
    limit: int
    ends: float
    reason: str  # "shaping" or "warmup"
    detail: str
    length: float = 60.0  # seconds (a minute, an hour, a day)


def windows(provider: str, limits: Limits, warmup_start: str | None, now: float) -> list[Window]:
    """The windows a message to `provider` counts in now (none: no rate, no warm-up)."""
    out = []
    if limits.per_minute:
        m = int(now // 60)
        out.append(Window(f"m{m}", limits.per_minute, (m + 1) * 60.0, "shaping",
                          f"{limits.per_minute} messages a minute to {provider}"))
    if limits.per_hour:
        h = int(now // 3600)
        out.append(Window(f"h{h}", limits.per_hour, (h + 1) * 3600.0, "shaping",
                          f"{limits.per_hour} messages an hour to {provider}", 3600.0))
    cap = warmup_cap(warmup_start, now)
    if cap is not None:
        today = datetime.fromtimestamp(now, UTC).date()
        midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).timestamp()
        out.append(Window(f"d{today:%Y%m%d}", cap, midnight, "warmup",
                          f"IP warm-up day {warmup_day(warmup_start, now)}: {cap} messages to {provider} a day",
                          86400.0))
    return out


@dataclass
class Slot:
    """One session's share of the fleet's limits: its lease and the messages it holds."""

    ip: str
    provider: str
    limits: Limits
    lease_id: str | None  # None: unshaped (the store failed) or released
    lease_until: float = 0.0
    tokens: int | None = None  # messages held from the windows (None: no window applies)
    taken: dict[str, int] = field(default_factory=dict)  # window -> messages taken by this slot
    forget: set[str] = field(default_factory=set)  # windows that are over, dropped at release
    sent: int = 0
    lost: bool = False  # its lease could not be renewed (expired and dropped): close after this one
    released: bool = False


class Shaper:
    """The container's side of fleet-wide shaping: takes and releases slots and messages in
    the store (`slots`), and says when a recipient must wait. Built by DeliveryService."""

    def __init__(self, slots: Slots | None, settings: Settings, *, clock: Callable[[], float],
                 rng: Callable[[], float], count_by: Callable[[str, int, Mapping[str, str]], None],
                 cap_for: Callable[[str, str, Limits, float], int] | None = None) -> None:
        self.slots, self.settings, self.clock, self.rng, self.count_by = slots, settings, clock, rng, count_by
        # The connection cap may be lower than the provider's limit: suspension.connection_cap
        # (the ramp after a suspension, issue 11 item 4) plugs in here.
        self.cap_for = cap_for or (lambda ip, provider, limits, now: limits.connections)
        self._open: dict[tuple[str, str], int] = {}  # this container's shaped sessions per pool key
        self.calls = StoreCalls(name="outpost-shaping")  # its store calls' threads (bounded)

    def local_open(self, key: tuple[str, str]) -> int:
        return self._open.get(key, 0)

    def opened(self, key: tuple[str, str]) -> None:
        self._open[key] = self._open.get(key, 0) + 1

    def closed(self, key: tuple[str, str]) -> None:
        self._open[key] = max(0, self._open.get(key, 0) - 1)

    def batch_done(self) -> None:
        """Every session of the batch is closed (the pool closes them): the count starts over,
        so a session a bug lost track of cannot make later batches wait in `turn`."""
        self._open.clear()

    @property
    def enabled(self) -> bool:
        return self.settings.shaping_enabled and self.slots is not None

    @property
    def ip(self) -> str:
        return self.settings.sender_ip or DEFAULT_IP

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One store call, bounded by STORE_WAIT (asyncio.TimeoutError counts as a failure) and
        by store_calls.STORE_THREADS threads: with all of them held past STORE_WAIT by a stalled
        store, the call fails at once (StoreStalledError), and the session goes unshaped."""
        return await self.calls.call(fn, *args, wait=STORE_WAIT)

    def _store_failed(self, what: str, provider: str) -> None:
        log.warning("shaping store call failed; unshaped", exc_info=True, extra={"provider": provider, "step": what})
        self.count_by("ShapingStoreFailed", 1, {"provider": provider})

    # ---- a session's slot ----------------------------------------------------------------
    async def open(self, mx_host: str, waited: int = 0) -> Slot | Waiting:
        """A connection slot for the provider of `mx_host`, with a block of messages when a
        rate or the warm-up applies; a Waiting when there is no room (`waited`: the waiting
        recipients' consecutive waits so far, which make this one longer)."""
        assert self.slots is not None
        now, provider = self.clock(), provider_for(mx_host)
        limits = limits_for(provider, self.settings.shaping)
        cap = max(0, min(limits.connections, self.cap_for(self.ip, provider, limits, now)))
        wins = windows(provider, limits, self.settings.warmup_start, now)
        n = min(BLOCK, limits.per_connection)
        lease_id, until = secrets.token_hex(6), now + LEASE
        try:
            for _ in range(4):
                taken, state = await self._call(
                    self.slots.take_slot, self.ip, provider, lease_id, until, cap,
                    {w.name: (n, w.limit) for w in wins}, now)
                if taken:
                    assert state is not None
                    self.count_by("ConnectionsInUse", len(state.leases), {"provider": provider})
                    return Slot(self.ip, provider, limits, lease_id, until, n if wins else None,
                                {w.name: n for w in wins}, self._over(state, wins))
                leases = dict(state.leases) if state else {}
                if len(leases) >= cap:
                    expired = {k: v for k, v in leases.items() if v <= now}
                    if expired and len(leases) - len(expired) < cap:
                        # A killed sender's leases: dropped (only if still expired), then again.
                        await self._call(self.slots.drop_leases, self.ip, provider, expired)
                        continue
                    return self._wait_slot(provider, cap, now, waited)
                room = _room(wins, state) if wins else n
                if room >= n:
                    continue  # a slot or messages were given back meanwhile: again
                if room >= 1:
                    n = room  # what is left of a window: take that much
                    continue
                return self._wait_window(provider, wins, state, waited)
        except Exception:  # noqa: BLE001 - a failing store never blocks delivery
            self._store_failed("open", provider)
            return Slot(self.ip, provider, limits, None)
        return self._wait_slot(provider, cap, now, waited)

    async def before_send(self, slot: Slot, waited: int = 0) -> Waiting | None:
        """Before a transaction on the slot's session: the lease renewed when due, a message
        in hand (another block taken when the last is used, or when its window is over); a
        Waiting when the provider's windows are full."""
        if slot.lease_id is None or self.slots is None:
            return None
        now = self.clock()
        try:
            if slot.lease_until - now < RENEW_AT:
                until = now + LEASE
                if await self._call(self.slots.renew_slot, slot.ip, slot.provider, slot.lease_id, until):
                    slot.lease_until = until
                else:
                    slot.lost = True  # dropped as expired by another sender: this is its last message
            if slot.tokens is None:
                return None
            wins = windows(slot.provider, slot.limits, self.settings.warmup_start, now)
            current = {w.name for w in wins}
            if set(slot.taken) != current:
                # A window ended: what was taken in it lapses with it (never carried over).
                slot.forget.update(set(slot.taken) - current)
                slot.taken = {k: v for k, v in slot.taken.items() if k in current}
                slot.tokens = 0 if slot.taken.keys() != current else slot.tokens
            if slot.tokens > 0:
                return None
            n = max(1, min(BLOCK, slot.limits.per_connection - slot.sent))
            for _ in range(2):
                taken, state = await self._call(
                    self.slots.take_tokens, slot.ip, slot.provider, {w.name: (n, w.limit) for w in wins}, now)
                if taken:
                    slot.tokens = n
                    for w in wins:
                        slot.taken[w.name] = slot.taken.get(w.name, 0) + n
                    return None
                room = _room(wins, state)
                if room < 1:
                    break
                n = min(n, room)
            return self._wait_window(slot.provider, wins, state, waited)
        except Exception:  # noqa: BLE001 - a failing store never blocks delivery
            self._store_failed("before_send", slot.provider)
            slot.tokens = None
            return None

    @staticmethod
    def sent(slot: Slot) -> None:
        slot.sent += 1
        if slot.tokens is not None:
            slot.tokens = max(0, slot.tokens - 1)

    @staticmethod
    def spent(slot: Slot) -> bool:
        """The session has carried its per-connection messages (or lost its lease): close it."""
        return slot.sent >= slot.limits.per_connection or slot.lost

    async def release(self, slot: Slot) -> None:
        """The session closed: its lease dropped and its unsent messages given back (in the
        windows still current), in one write. Best effort: a lease left behind expires."""
        if slot.released or slot.lease_id is None or self.slots is None:
            slot.released = True
            return
        slot.released = True
        now = self.clock()
        current = {w.name for w in windows(slot.provider, slot.limits, self.settings.warmup_start, now)}
        give_back = {w: slot.tokens for w in slot.taken if w in current and slot.tokens}
        forget = (slot.forget | set(slot.taken)) - current
        try:
            await self._call(self.slots.release_slot, slot.ip, slot.provider, slot.lease_id,
                                    give_back, sorted(forget))
        except Exception:  # noqa: BLE001 - the lease expires on its own
            self._store_failed("release", slot.provider)

    # ---- waiting ---------------------------------------------------------------------------
    def _wait_slot(self, provider: str, cap: int, now: float, waited: int = 0) -> Waiting:
        return Waiting("shaping", provider, now + slot_wait(waited, self.rng()),
                       f"all {cap} connections to {provider} in use across the fleet", waited + 1)

    def _wait_window(self, provider: str, wins: list[Window], state: SlotState | None,
                     waited: int = 0) -> Waiting:
        used = state.used if state else {}
        full = [w for w in wins if w.limit - used.get(w.name, 0) < 1] or wins
        w = max(full, key=lambda w: w.ends)
        if w.reason != "shaping":
            return Waiting(w.reason, provider, w.ends, w.detail)  # the warm-up: the next UTC day
        return Waiting(w.reason, provider, w.ends + window_spread(w, waited, self.rng()), w.detail, waited + 1)

    @staticmethod
    def _over(state: SlotState, wins: list[Window]) -> set[str]:
        """Windows in the store that are over: dropped when this slot is released."""
        return set(state.used) - {w.name for w in wins}


def slot_wait(waited: int, rng: float) -> float:
    """Seconds a recipient's next slot wait lasts after `waited` consecutive ones: SLOT_WAIT
    (uniform, `rng` in [0, 1)), doubled per wait before it, at most SLOT_WAIT_GROWTH times."""
    lo, hi = SLOT_WAIT
    return min(2 ** min(waited, 16), SLOT_WAIT_GROWTH) * (lo + (hi - lo) * rng)


def window_spread(w: Window, waited: int, rng: float) -> float:
    """Seconds after a full window's end a recipient comes back after `waited` consecutive
    waits: none the first time, then anywhere in the next 1, 3, 7... windows (at most
    WINDOW_SPREAD seconds), so a backlog does not come back all at the next window's start
    only for the window's limit of it to get through."""
    return rng * min(WINDOW_SPREAD, w.length * (2 ** min(waited, 16) - 1))


def _room(wins: list[Window], state: SlotState | None) -> int:
    used = state.used if state else {}
    return min((w.limit - used.get(w.name, 0) for w in wins), default=0)


@dataclass
class SlotForHost:
    """The slot of a session being opened (domain.open_first): taken for the provider of the MX
    host tried, and moved (released, then taken for the other) when a host that failed is
    followed by one at another provider, so the slot counts where the session really goes.
    `waiting`: that provider had no room (the recipients wait, with no attempt)."""

    shaper: Shaper
    key: tuple[str, str]  # the session pool's key (Shaper.opened: this container's count)
    waited: int = 0  # the recipients' consecutive waits so far (Shaper.open)
    slot: Slot | None = None
    waiting: Waiting | None = None

    @classmethod
    def begin(cls, shaper: Shaper, key: tuple[str, str], waited: int = 0) -> SlotForHost:
        """Counted as this container's session from now, before any await (domain.DomainRun.turn:
        concurrent jobs see it opening); `drop` uncounts it when no session comes of it."""
        shaper.opened(key)
        return cls(shaper, key, waited)

    async def take(self, mx_host: str) -> bool:
        """A slot at the provider of `mx_host` in hand (False: no room, see `waiting`)."""
        if self.slot is not None and self.slot.provider == provider_for(mx_host):
            return True
        slot, self.slot = self.slot, None
        if slot is not None:
            await self.shaper.release(slot)  # the host that failed was another provider's
        got = await self.shaper.open(mx_host, self.waited)
        if isinstance(got, Waiting):
            self.waiting = got
            return False
        self.slot = got
        return True

    async def drop(self) -> None:
        """No session came of it: the slot given back, the count of sessions undone."""
        slot, self.slot = self.slot, None
        self.shaper.closed(self.key)
        if slot is not None:
            await self.shaper.release(slot)


@dataclass
class ShapedSession:
    """A Session that holds a slot: it counts its messages, and closing it releases the slot."""

    inner: Session
    slot: Slot
    shaper: Shaper
    key: tuple[str, str] = ("", "")  # the session pool's key (this container's count per key)
    mx_name: str = ""
    ip: str = ""
    tls: TlsInfo | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        # (counted in Shaper.opened from the moment its opening began; closing uncounts it)
        self.mx_name, self.ip, self.tls = self.inner.mx_name, self.inner.ip, self.inner.tls

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    async def reset(self) -> None:
        await self.inner.reset()

    async def send(self, sender: str, rcpt: str, data: bytes | Sequence[bytes], *, envid: str | None = None,
                   utf8: bool = False, time_left: Callable[[], float] | None = None,
                   dot_within: float | None = None) -> SmtpReply:
        try:
            return await self.inner.send(sender, rcpt, data, envid=envid, utf8=utf8, time_left=time_left,
                                         dot_within=dot_within)
        finally:
            self.shaper.sent(self.slot)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            await self.abandon()

    async def abandon(self) -> None:
        """The transport closed the connection itself (a stale session, a slow peer): only the
        slot is released (no QUIT to a peer that may not answer)."""
        if not self._closed:
            self._closed = True
            self.shaper.closed(self.key)
        await self.shaper.release(self.slot)
