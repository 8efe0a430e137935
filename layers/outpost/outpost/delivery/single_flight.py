"""One store read per key in flight per container, bounded in time (the shared slow-domain
mark, a provider's suspension): concurrent jobs of a batch wait for the same read, and none
waits longer than `wait` for it; the read goes on, and its answer is kept by the reader."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def read_once(reads: dict[str, asyncio.Future[T]], key: str, read: Callable[[], Awaitable[T]],
                    wait: float) -> T:
    """The answer of the read in flight for `key`, or of a new one; TimeoutError after `wait`
    seconds (the caller decides what no answer means; delivery never waits on the store)."""
    pending = reads.get(key)
    if pending is None or pending.get_loop() is not asyncio.get_running_loop():
        pending = asyncio.ensure_future(read())
        reads[key] = pending
        pending.add_done_callback(lambda done: reads.pop(key, None) if reads.get(key) is done else None)
    return await asyncio.wait_for(asyncio.shield(pending), wait)
