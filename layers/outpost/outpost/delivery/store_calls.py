"""Store calls off the event loop, bounded in time and in threads (issue 11, review item 4).

`asyncio.wait_for(asyncio.to_thread(...))` stops waiting after its bound, but the thread goes
on until the call returns: under a stalled DynamoDB (boto3 retries a read timeout 4 times, 10 s
each), every call cut by the bound leaves one more thread behind, and they pile up (and
`asyncio.run` waits for all of them at its end). Here a call runs on a small executor of its
own: at most `threads` calls run at once, and at most `queue` more wait for a thread (a
healthy store's bursts: a batch's jobs opening sessions, or closing them all at its end). A
call that finds the queue full, or every thread held by a call already running longer than
its `wait` (the store is stalled: it would only queue behind them), is not started and fails
at once (StoreStalledError), which the caller handles like any store failure (shaping: the
session goes unshaped); a queued call whose `wait` ends before it started is dropped, never
run. So N stalled calls never hold more than `threads` threads, and a stalled store costs a
caller at most `wait` seconds, and nothing once it is known stalled.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import StoreStalledError

STORE_THREADS = 4  # store calls running at once per container (shaping's; a batch runs ~10 jobs)
STORE_QUEUE = 64  # more waiting for a thread; beyond them a call fails at once


class StoreCalls:
    """A bounded executor for one kind of store call (one per DeliveryService: its Shaper)."""

    def __init__(self, threads: int = STORE_THREADS, name: str = "outpost-store", *,
                 queue: int = STORE_QUEUE) -> None:
        self.threads, self.queue, self.name = threads, queue, name
        self.busy = 0  # calls in flight: submitted and not yet returned (or cancelled unstarted)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, float]] = {}  # call -> (started, its wait): monotonic

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            return self._pool

    async def call(self, fn: Callable[..., Any], *args: Any, wait: float) -> Any:
        """fn(*args) on a thread of this executor, awaited at most `wait` seconds
        (TimeoutError); StoreStalledError at once when every thread is busy and the queue full."""
        with self._lock:
            now = time.monotonic()
            stalled = sum(1 for started, bound in self._running.values() if now - started > bound)
            if self.busy >= self.threads + self.queue or stalled >= self.threads:
                raise StoreStalledError(f"{self.busy} store calls in flight or queued, {stalled} stalled; "
                                        "not started")
            self.busy += 1
        try:
            done: Future[Any] = self._executor().submit(self._run, fn, args, wait)
        except BaseException:
            self._returned(None)
            raise
        # Freed when the call returns (or is cancelled before it began), not when we stop waiting.
        done.add_done_callback(self._returned)
        return await asyncio.wait_for(asyncio.wrap_future(done), wait)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], wait: float) -> Any:
        key = threading.get_ident()
        with self._lock:
            self._running[key] = (time.monotonic(), wait)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running.pop(key, None)

    def _returned(self, _: object) -> None:
        with self._lock:
            self.busy -= 1
