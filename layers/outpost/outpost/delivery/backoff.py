"""The retry schedule: a pure function of the attempt number (KumoMTA style).

Default delays after attempt n (1-based): 1, 5, 15, 30 minutes, then 1, 2, 4 hours, then every
4 hours, each with +/-10% jitter so that a burst of deferrals does not come back as a burst.
Retries go on until the message's lifetime (default 2 days) ends: when the next step would
pass it, the last attempt is made just before the end (a recipient with 3 h left and a 4 h
step still gets one more try); a recipient still open after that ends `expired` (4.4.7).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import DEFAULT_RETRY_SCHEDULE

JITTER = 0.10
RELEASE_DELAYS = (10, 30, 60, 120, 300, 900)  # seconds; see delay_for_release


def delay_for_attempt(n: int, schedule: Sequence[int] = DEFAULT_RETRY_SCHEDULE,
                      jitter: float = 0.5) -> float:
    """Seconds to wait after failed attempt `n`. `jitter` in [0, 1) comes from the caller's RNG
    (0.5 means none), so the function stays pure and testable."""
    if n < 1:
        raise ValueError("attempts are numbered from 1")
    base = schedule[min(n, len(schedule)) - 1]
    return base * (1 + JITTER * (2 * jitter - 1))


def next_attempt_at(now: float, n: int, deliver_until: float,
                    schedule: Sequence[int] = DEFAULT_RETRY_SCHEDULE,
                    jitter: float = 0.5) -> float | None:
    """When to try again after attempt `n`: the schedule's step, capped at one second before
    `deliver_until`; None only when the lifetime is over (the recipient expires, 4.4.7)."""
    last = deliver_until - 1
    if now >= last:
        return None
    return min(now + delay_for_attempt(n, schedule, jitter), last)


def delay_for_release(n: int) -> float:
    """Seconds before recipients released without an attempt (no time left in the invocation,
    a memory budget, a failed write) are tried again, after the `n`th such run in a row.

    Never 0: a release records nothing, so a job that releases at once, every time, would
    loop until the message expires (issue 8 item 5). Short at first (the next invocation has
    a fresh budget), growing so that whatever keeps eating the time stops costing a full
    invocation every few seconds."""
    if n < 1:
        raise ValueError("releases are numbered from 1")
    return float(RELEASE_DELAYS[min(n, len(RELEASE_DELAYS)) - 1])
