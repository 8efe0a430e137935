"""How long a throttling provider is left alone, and how delivery resumes (issue 11 item 4).

Pure policy: the store keeps the record (store.Suspensions, `SUSP#<ip>#<provider>`), domain.py
asks and writes it; nothing here does I/O.

- A throttle (trouble.judge -> Scope.PROVIDER) suspends the provider for the sending IP for
  the current step of OUTPOST_THROTTLE_BACKOFF (default 10, 30, 60, 120, 240 minutes, the last
  one repeating), but never less than the provider's own minimum (throttles.BACKOFF_MINIMUM:
  Google 10 minutes, Yahoo 2 hours, ...; scaled with the first step and capped by the longest,
  so a shortened schedule shortens the minimums too).
- The level grows by one when a throttle comes within the quiet period (the longest step)
  after the last suspension ended, and decays by one per quiet period without one; a
  throttle during a suspension (a container that had a session open already) changes
  nothing: the first writer's record stands.
- After a suspension ends the provider gets ONE connection, then one more every `ramp`
  seconds, up to its Limits.connections (Google's guidance: resume with one connection and
  add connections one at a time). `connection_cap` is the number the fleet-wide connection
  limiter (shaping.py) and, until then, the sender's own sessions honour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import DEFAULT_THROTTLE_BACKOFF, DEFAULT_THROTTLE_RAMP
from ..records import Suspension
from .providers import Limits
from .throttles import BACKOFF_MINIMUM

DEFAULT_IP = "default"  # the sending IP when settings.sender_ip is unknown
REPLY_LIMIT = 500  # characters of the throttle reply kept with the suspension


@dataclass(frozen=True)
class Policy:
    steps: tuple[int, ...] = DEFAULT_THROTTLE_BACKOFF  # seconds, per level (1-based)
    ramp: float = DEFAULT_THROTTLE_RAMP  # seconds per extra connection after a suspension

    @property
    def quiet(self) -> float:
        """A throttle within this long after a suspension raises the level; each such
        period without one lowers it."""
        return float(max(self.steps))


def is_suspended(s: Suspension | None, now: float) -> bool:
    return s is not None and s.until > now


def level_after(prev: Suspension | None, now: float, policy: Policy) -> int:
    """The level a throttle at `now` starts, given the provider's last suspension."""
    if prev is None:
        return 1
    if now < prev.until:
        return prev.level
    decayed = int((now - prev.until) // policy.quiet)
    return max(0, prev.level - decayed) + 1


def duration(level: int, backoff: str | None, policy: Policy) -> float:
    """Seconds a suspension at `level` lasts: the step, at least the class's minimum. The
    minimum scales with the schedule's first step (a bench that divides the schedule by K
    divides the minimums by K) and is capped by its longest step, so one setting shortens
    everything for a test or a bench (the default schedule leaves every minimum whole)."""
    step = policy.steps[min(max(level, 1), len(policy.steps)) - 1]
    scale = policy.steps[0] / DEFAULT_THROTTLE_BACKOFF[0]
    minimum = min(BACKOFF_MINIMUM.get(backoff or "generic", 0) * scale, max(policy.steps))
    return float(max(step, minimum))


def next_suspension(prev: Suspension | None, ip: str, provider: str, backoff: str | None, reply: str,
                    now: float, policy: Policy) -> Suspension | None:
    """The suspension a throttle at `now` records; None while `prev` still runs (it stands)."""
    if is_suspended(prev, now):
        return None
    level = level_after(prev, now, policy)
    return Suspension(ip=ip, provider=provider, until=now + duration(level, backoff, policy), level=level,
                      reply=reply[:REPLY_LIMIT], since=now)


def forget_at(s: Suspension, policy: Policy) -> float:
    """When the record no longer matters (its TTL): its level has decayed to nothing, and the
    ramp is long over."""
    return s.until + max(s.level, 1) * policy.quiet


def connection_cap(s: Suspension | None, limits: Limits, now: float, ramp: float = DEFAULT_THROTTLE_RAMP) -> int:
    """How many connections the fleet may hold to the provider now: none while suspended, one
    when the suspension has just ended, one more per `ramp` seconds, up to the limit."""
    if s is None:
        return limits.connections
    if now < s.until:
        return 0
    grown = 1 + math.floor((now - s.until) / ramp) if ramp > 0 else limits.connections
    return max(1, min(limits.connections, grown))
