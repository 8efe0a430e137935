"""Store calls off the event loop, bounded in time and in threads (issue 11, review item 4).

`asyncio.wait_for(asyncio.to_thread(...))` stops waiting after its bound, but the thread goes
on until the call returns: under a stalled DynamoDB (boto3 retries a read timeout 4 times, 10 s
each), every call cut by the bound leaves one more thread behind, and they pile up (and
`asyncio.run` waits for all of them at its end). Here a call runs on a small executor of its
own, at most `threads` calls in flight (running or about to run); a call that finds them all
busy is not started and fails at once (StoreStalledError), which the caller handles like any
store failure (shaping: the session goes unshaped). So N stalled calls never hold more than
`threads` threads, and a stalled store costs a caller at most `wait` seconds, usually nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import StoreStalledError

STORE_THREADS = 4  # store calls in flight at once per container (shaping's; a batch runs ~10 jobs)


class StoreCalls:
    """A bounded executor for one kind of store call (one per DeliveryService: its Shaper)."""

    def __init__(self, threads: int = STORE_THREADS, name: str = "outpost-store") -> None:
        self.threads, self.name = threads, name
        self.busy = 0  # calls in flight: submitted and not yet returned (or cancelled unstarted)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            return self._pool

    async def call(self, fn: Callable[..., Any], *args: Any, wait: float) -> Any:
        """fn(*args) on a thread of this executor, awaited at most `wait` seconds
        (TimeoutError); StoreStalledError at once when every thread is still busy."""
        with self._lock:
            if self.busy >= self.threads:
                raise StoreStalledError(f"{self.threads} store calls still in flight; not started")
            self.busy += 1
        try:
            done: Future[Any] = self._executor().submit(fn, *args)
        except BaseException:
            self._returned(None)
            raise
        # Freed when the call returns (or is cancelled before it began), not when we stop waiting.
        done.add_done_callback(self._returned)
        return await asyncio.wait_for(asyncio.wrap_future(done), wait)

    def _returned(self, _: object) -> None:
        with self._lock:
            self.busy -= 1
