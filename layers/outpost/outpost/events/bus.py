"""EventBridge as an event sink (issue 12): PutEvents in batches of 10 entries and 256 KB, source
`outpost`, detail-type the event type, detail the event's payload (Event.payload(), the body a
webhook receives). Entries EventBridge fails (FailedEntryCount) are put again, with backoff,
a few times; what still fails raises, so the stream batch item fails and Lambda retries it.

EventBridge has no idempotency key: a retried batch may put an event twice (at least once);
a rule's target that must not see duplicates compares the detail's type, timestamp and data.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import EventPublishError
from . import Event

SOURCE = "outpost"
BATCH = 10  # PutEvents takes at most 10 entries a call
# ... and at most 256 KB in all (an entry: 14 bytes for Time, plus Source, DetailType, Detail and
# Resources in UTF-8). The Detail is UTF-8 JSON, not \u-escaped: a tag of 4-byte characters
# escaped is 12 bytes a character, so 50 tags of 384 (the API's limits) alone were 230 KB.
MAX_CALL_BYTES = 256 * 1024
ATTEMPTS = 4  # calls per batch at most (the first and three retries of its failed entries)
BACKOFF_BASE = 0.1  # seconds: 0.1, 0.2, 0.4 with full jitter


def entry(event: Event, bus: str) -> dict[str, str]:
    """One PutEvents entry for an event."""
    return {"Source": SOURCE, "DetailType": event.type, "EventBusName": bus,
            "Detail": json.dumps(event.payload(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)}


def entry_size(e: dict[str, str]) -> int:
    """An entry's size as EventBridge counts it (its PutEvents size calculation)."""
    return 14 + sum(len(e.get(k, "").encode()) for k in ("Source", "DetailType", "Detail"))


def batches(entries: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The entries in order, in calls of at most BATCH entries and MAX_CALL_BYTES bytes (an
    entry too large alone goes alone: EventBridge's refusal then fails the batch, loudly)."""
    out: list[list[dict[str, str]]] = []
    size = 0
    for e in entries:
        n = entry_size(e)
        if not out or len(out[-1]) >= BATCH or size + n > MAX_CALL_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += n
    return out


class EventBus:
    """Publishes events to one EventBridge bus (its name or ARN) through `client` (boto3's
    "events" client, or anything with its put_events)."""

    def __init__(self, client: Any, bus: str, *, attempts: int = ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random) -> None:
        self.client, self.bus, self.attempts, self.sleep, self.rng = client, bus, attempts, sleep, rng

    def publish(self, events: Sequence[Event]) -> None:
        for call in batches([entry(e, self.bus) for e in events]):
            self._put(call)

    def _put(self, entries: list[dict[str, str]]) -> None:
        for attempt in range(1, self.attempts + 1):
            r = self.client.put_events(Entries=entries)
            if not r.get("FailedEntryCount"):
                return
            # The result entries are in the request's order; a failed one has an ErrorCode.
            failed = [e for e, res in zip(entries, r.get("Entries") or [], strict=False) if res.get("ErrorCode")]
            entries = failed or entries  # no ErrorCode shown: put them all again
            if attempt < self.attempts:
                self.sleep(self.rng() * BACKOFF_BASE * 2 ** (attempt - 1))
        raise EventPublishError(f"EventBridge refused {len(entries)} event(s) after {self.attempts} attempts",
                                failed=len(entries))
