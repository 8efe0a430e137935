"""Per-client-IP bounds (open connections, the AUTH failure lockout) and the process's budget
of message bytes in flight (ByteBudget).

In process memory: one container's view. Behind the Network Load Balancer each container
counts for itself, so with N containers an address may make N x `auth_failures` attempts per
window (and N x `max_connections_per_ip` connections). The lockout is about noise and load,
not secrecy: a key is 256 random bits, which no number of guesses finds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .settings import SubmissionSettings

__all__ = ["ByteBudget", "ClientGuard"]


class ClientGuard:
    def __init__(self, settings: SubmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.s, self.clock = settings, clock
        self._open: dict[str, int] = {}
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # ip -> locked until
        self._lock = threading.Lock()

    def connect(self, ip: str) -> bool:
        """Count a new connection; False (refuse it) past either connection limit."""
        with self._lock:
            if sum(self._open.values()) >= self.s.max_connections \
                    or self._open.get(ip, 0) >= self.s.max_connections_per_ip:
                return False
            self._open[ip] = self._open.get(ip, 0) + 1
            return True

    def disconnect(self, ip: str) -> None:
        with self._lock:
            left = self._open.get(ip, 0) - 1
            if left > 0:
                self._open[ip] = left
            else:
                self._open.pop(ip, None)

    def locked(self, ip: str) -> bool:
        with self._lock:
            until = self._locked.get(ip)
            if until is None:
                return False
            if self.clock() >= until:
                del self._locked[ip]
                return False
            return True

    def failed(self, ip: str) -> bool:
        """Record a failed AUTH; True when it locks the address out."""
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded: an address spread starts counting afresh
                self._failures.clear()
            recent = self._failures.setdefault(ip, deque())
            recent.append(now)
            while recent and recent[0] <= now - self.s.auth_window:
                recent.popleft()
            if len(recent) < self.s.auth_failures:
                return False
            del self._failures[ip]
            self._locked[ip] = now + self.s.lockout
            if len(self._locked) > 100_000:  # bounded: forget the oldest-expiring half
                for key in sorted(self._locked, key=self._locked.__getitem__)[:50_000]:
                    del self._locked[key]
            return True


class ByteBudget:
    """Bytes reserved by the DATA commands in flight, at most `total` (used from one event loop);
    with an `owner` (the API key), at most `share` of them for one owner (beyond its first DATA,
    which may be a largest message whatever the share): ten slow DATAs of one
    key (40 MB each without SIZE, kept up to session_timeout by a byte now and then) must not
    hold every other client at 451 4.3.2."""

    def __init__(self, total: int, share: float = 1.0) -> None:
        self.total, self.used = total, 0
        self.per_owner = int(total * share)
        self._owned: dict[str, int] = {}

    def take(self, n: int, owner: str | None = None) -> bool:
        if self.used + n > self.total:
            return False
        if owner is not None:
            held = self._owned.get(owner, 0)
            if held and held + n > self.per_owner:  # a key's first DATA always fits its share
                return False
            self._owned[owner] = self._owned.get(owner, 0) + n
        self.used += n
        return True

    def give(self, n: int, owner: str | None = None) -> None:
        self.used -= n
        if owner is not None:
            left = self._owned.get(owner, 0) - n
            if left > 0:
                self._owned[owner] = left
            else:
                self._owned.pop(owner, None)
