"""EventBridge as an event sink (issue 12): PutEvents in batches of 10 entries and 256 KB, source
`outpost`, detail-type the event type, detail the event's payload (Event.payload(), the body a
webhook receives). Entries EventBridge fails (FailedEntryCount) are put again, with backoff,
a few times; what still fails raises, so the stream batch item fails and Lambda retries it.

EventBridge has no idempotency key: a retried batch may put an event twice (at least once);
a rule's target that must not see duplicates compares the detail's type, timestamp and data.
The bus remembers the last REMEMBERED event ids it put (one Lambda container's memory), so
the service's record-by-record retry after a partial failure, and a batch retried in the same
container, do not put again what EventBridge already took.
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
REMEMBERED = 10_000  # event ids put, kept to skip on a retry (a stream batch is at most 10,000)
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
        self._put_ids: dict[str, None] = {}  # insertion-ordered: the oldest first

    def publish(self, events: Sequence[Event]) -> None:
        """Every call is made, even after one failed (s17b: a commit's record carries the creation
        events of all its recipients, and one poison entry must not hold back those after it);
        then the first failure raises."""
        fresh = [e for e in events if e.event_id not in self._put_ids]
        done = 0
        failure: EventPublishError | None = None
        for call in batches([entry(e, self.bus) for e in fresh]):  # in order: fresh[done:done + len]
            try:
                self._put(list(zip([e.event_id for e in fresh[done:done + len(call)]], call, strict=True)))
            except EventPublishError as exc:
                failure = failure or exc
            done += len(call)
        if failure is not None:
            raise failure

    def _remember(self, ids: list[str]) -> None:
        for i in ids:
            self._put_ids[i] = None
        while len(self._put_ids) > REMEMBERED:
            del self._put_ids[next(iter(self._put_ids))]

    def _put(self, pending: list[tuple[str, dict[str, str]]]) -> None:
        """Put (event id, entry) pairs; remembers each id EventBridge took, even in a call
        that fails in the end."""
        for attempt in range(1, self.attempts + 1):
            r = self.client.put_events(Entries=[e for _, e in pending])
            if not r.get("FailedEntryCount"):
                self._remember([i for i, _ in pending])
                return
            # The result entries are in the request's order; a failed one has an ErrorCode.
            results = list(zip(pending, r.get("Entries") or [], strict=False))
            failed = [p for p, res in results if res.get("ErrorCode")]
            if failed:
                self._remember([p[0] for p, res in results if not res.get("ErrorCode")])
            pending = failed or pending  # no ErrorCode shown: put them all again
            if attempt < self.attempts:
                self.sleep(self.rng() * BACKOFF_BASE * 2 ** (attempt - 1))
        raise EventPublishError(f"EventBridge refused {len(pending)} event(s) after {self.attempts} attempts",
                                failed=len(pending))
