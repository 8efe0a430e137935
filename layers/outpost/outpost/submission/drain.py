"""Graceful stop: the open sessions of one process, and how they end when it stops.

ECS stops a task with SIGTERM and SIGKILLs it StopTimeout (120 s) later. On SIGTERM the
listeners close at once (no new connection), then `Sessions.drain`:
  1. every session waiting for a command is sent `421 4.3.2 Service shutting down` and closed
     (RFC 5321 §3.8: a server that must shut down replies 421 to the next command, or at
     once, and closes); one inside a command finishes it, then gets the same 421 (the session
     does that itself when it sees `draining`);
  2. a DATA being received or stored is never cut before `seconds` (the drain time, setting
     OUTPOST_SUBMISSION_DRAIN_SECONDS, below StopTimeout) have passed;
  3. after them, every session left is sent the 421 and closed;
  4. a session whose close has not completed `grace` seconds after its 421 (a TLS peer that
     never answers close_notify) is aborted.
Python 3.12's asyncio.Server.wait_closed() waits for every open connection and 3.12 has no
Server.close_clients(): hence this registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Drainable", "Sessions"]


class Drainable(Protocol):
    """A session, as the drain sees it."""

    @property
    def busy(self) -> bool:
        """Inside a command (DATA, or any other not yet answered)."""
        ...

    def say_goodbye(self) -> None:
        """Write the 421 4.3.2 and start closing the connection."""
        ...

    def abort(self) -> None:
        """Drop the connection without waiting for anything."""
        ...


class Sessions:
    """The sessions open in one process (used from its event loop only)."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.draining = False
        self._open: set[Drainable] = set()
        self._closing: set[Drainable] = set()  # said goodbye, waiting for connection_lost
        self._changed = asyncio.Event()
        self._hurry = False

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: Drainable) -> None:
        self._open.add(session)

    def remove(self, session: Drainable) -> None:
        self._open.discard(session)
        self._closing.discard(session)
        self._changed.set()

    def hang_up(self, session: Drainable) -> None:
        """421 4.3.2 and close, once per session."""
        if session in self._open and session not in self._closing:
            self._closing.add(session)
            session.say_goodbye()
            self._changed.set()

    def cut_short(self) -> None:
        """End the drain now (a second SIGTERM or SIGINT)."""
        self._hurry = True
        self._changed.set()

    def pending(self) -> int:
        """Sessions not yet told to go."""
        return len(self._open - self._closing)

    async def drain(self, seconds: float) -> int:
        """Steps 1-4 of the module docstring; returns how many sessions were cut at the deadline."""
        self.draining = True
        for session in list(self._open):
            if not session.busy:
                self.hang_up(session)
        await self._wait(self.pending, seconds, hurry=True)
        cut = [s for s in self._open if s not in self._closing]
        for session in cut:
            self.hang_up(session)
        if not await self._wait(lambda: len(self._open), self.grace, hurry=False):
            for session in list(self._open):
                session.abort()
                self.remove(session)
        return len(cut)

    async def _wait(self, count: Callable[[], int], seconds: float, *, hurry: bool) -> bool:
        """Until count() is 0 (True), or `seconds` pass or the drain is cut short (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while count():
            left = deadline - loop.time()
            if left <= 0 or (hurry and self._hurry):
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return False
        return True
