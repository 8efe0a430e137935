"""drain.Sessions, the submission server's graceful stop, with fake sessions on a real event loop:
who is told to go when, what waits for the drain time, what is cut at its end."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from outpost.submission.drain import Sessions


class FakeSession:
    """Closes `closes_after` seconds after its goodbye (None: never, a TLS peer that ignores it)."""

    def __init__(self, sessions: Sessions, *, busy: bool = False, closes_after: float | None = 0.0) -> None:
        self.sessions, self.busy, self.closes_after = sessions, busy, closes_after
        self.goodbyes: list[float] = []
        self.aborted = False
        sessions.add(self)

    def say_goodbye(self) -> None:
        loop = asyncio.get_running_loop()
        self.goodbyes.append(loop.time())
        if self.closes_after is not None:
            loop.call_later(self.closes_after, self.sessions.remove, self)

    def abort(self) -> None:
        self.aborted = True

    def finish_command(self) -> None:
        """What the server's command wrapper does once a command ends during the drain."""
        self.busy = False
        if self.sessions.draining:
            self.sessions.hang_up(self)


T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_idle_sessions_are_told_at_once_and_the_drain_ends_when_they_close() -> None:
    async def go() -> tuple[float, list[FakeSession], int]:
        sessions = Sessions()
        idle = [FakeSession(sessions) for _ in range(3)]
        t0 = asyncio.get_running_loop().time()
        cut = await sessions.drain(100.0)
        return asyncio.get_running_loop().time() - t0, idle, cut

    took, idle, cut = _run(go())
    assert took < 1.0 and cut == 0
    assert all(len(s.goodbyes) == 1 and not s.aborted for s in idle)


def test_a_busy_session_is_waited_for_then_told_after_its_command() -> None:
    async def go() -> tuple[float, FakeSession, int]:
        sessions = Sessions()
        busy = FakeSession(sessions, busy=True)
        asyncio.get_running_loop().call_later(0.3, busy.finish_command)
        t0 = asyncio.get_running_loop().time()
        cut = await sessions.drain(100.0)
        return busy.goodbyes[0] - t0, busy, cut

    told_after, busy, cut = _run(go())
    assert 0.25 <= told_after < 5 and cut == 0 and len(busy.goodbyes) == 1


def test_at_the_drain_time_every_session_left_is_cut() -> None:
    async def go() -> tuple[float, FakeSession, int]:
        sessions = Sessions()
        stuck = FakeSession(sessions, busy=True)  # a DATA that never ends
        t0 = asyncio.get_running_loop().time()
        cut = await sessions.drain(0.3)
        return stuck.goodbyes[0] - t0, stuck, cut

    told_after, stuck, cut = _run(go())
    assert 0.25 <= told_after < 5 and cut == 1 and not stuck.aborted


def test_a_session_that_never_closes_is_aborted_after_the_grace() -> None:
    async def go() -> tuple[float, FakeSession, int]:
        sessions = Sessions(grace=0.2)
        deaf = FakeSession(sessions, closes_after=None)
        t0 = asyncio.get_running_loop().time()
        await sessions.drain(100.0)  # it was told at once: the drain time is not waited for it
        return asyncio.get_running_loop().time() - t0, deaf, len(sessions)

    took, deaf, left = _run(go())
    assert 0.15 <= took < 5 and deaf.aborted and left == 0


def test_a_second_signal_cuts_the_drain_short() -> None:
    async def go() -> tuple[float, int]:
        sessions = Sessions()
        FakeSession(sessions, busy=True)
        asyncio.get_running_loop().call_later(0.2, sessions.cut_short)
        t0 = asyncio.get_running_loop().time()
        cut = await sessions.drain(100.0)
        return asyncio.get_running_loop().time() - t0, cut

    took, cut = _run(go())
    assert took < 5 and cut == 1


def test_each_session_is_told_once() -> None:
    async def go() -> FakeSession:
        sessions = Sessions()
        s = FakeSession(sessions, busy=True, closes_after=0.1)
        sessions.draining = True
        sessions.hang_up(s)
        sessions.hang_up(s)
        await asyncio.sleep(0.2)
        sessions.hang_up(s)  # closed by now
        return s

    assert len(_run(go()).goodbyes) == 1
