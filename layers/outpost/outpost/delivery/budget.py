"""The memory one batch's messages may cost at once (issue 8 item 13), and what one costs."""
from __future__ import annotations

import asyncio

from ..records import Message

MEMORY_FACTOR = 6  # peak bytes per byte of message (bench/sender_memory.py: 5.6-5.8)
UNKNOWN_SIZE = 40_000_000  # a message stored without its size (before issue 8) in S3


def memory_cost(meta: Message) -> int:
    """What building, signing and sending this message may cost in memory, at peak."""
    size = meta.size
    if size is None:
        size = len(meta.spec) if meta.spec is not None else UNKNOWN_SIZE
    return int(size) * MEMORY_FACTOR


class MemoryBudget:
    """Bytes the messages of one batch may cost at once. A job waits for room, and gives up
    (released, no attempt counted) when waiting longer would leave no time to deliver; the
    first job always fits, so a message larger than the budget still goes."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.used = limit, 0
        self._room = asyncio.Condition()

    async def take(self, cost: int, wait: float) -> bool:
        if self.limit is None:
            return True
        async with self._room:
            try:
                await asyncio.wait_for(self._room.wait_for(
                    lambda: self.used == 0 or self.used + cost <= (self.limit or 0)), max(0.0, wait))
            except TimeoutError:
                return False
            self.used += cost
            return True

    async def give(self, cost: int) -> None:
        if self.limit is None:
            return
        async with self._room:
            self.used -= cost
            self._room.notify_all()
