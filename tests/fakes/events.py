"""In-memory fakes for issue 12's events: an event log (outpost.store.EventLog) and sinks that
record what they were given or fail on demand. Records only: no key or index names."""

from __future__ import annotations

from collections.abc import Sequence

from outpost.events import Event
from outpost.store import Page


class FakeEventLog:
    """Each event once by event_id; lists newest first (oldest first on request). The cursor is
    the position in the filtered list, as a string."""

    def __init__(self) -> None:
        self.stored: dict[str, Event] = {}
        self.puts = 0

    def add_events(self, events: Sequence[Event], now: float) -> int:
        new = 0
        for e in events:
            self.puts += 1
            if e.event_id not in self.stored:
                self.stored[e.event_id] = e
                new += 1
        return new

    def publish(self, events: Sequence[Event]) -> None:
        self.add_events(events, 0.0)

    def events(self, *, since: str | None = None, type: str | None = None, message_id: str | None = None,
               limit: int = 50, cursor: str | None = None, oldest_first: bool = False) -> Page[Event]:
        found = sorted((e for e in self.stored.values()
                        if (since is None or e.timestamp >= since) and (type is None or e.type == type)
                        and (message_id is None or e.message_id == message_id)),
                       key=lambda e: (e.timestamp, e.event_id), reverse=not oldest_first)
        start = int(cursor or 0)
        end = start + limit
        return Page(found[start:end], None, cursor=str(end) if end < len(found) else None)


class RecordingSink:
    """Records every publish; raises `fail` (an exception) while `failing` is true, or for the
    events whose ids are in `fail_ids`."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.failing = False
        self.fail_ids: set[str] = set()

    def publish(self, events: Sequence[Event]) -> None:
        if self.failing or any(e.event_id in self.fail_ids for e in events):
            raise RuntimeError("sink down")
        self.calls.append(list(events))

    @property
    def ids(self) -> list[str]:
        return [e.event_id for call in self.calls for e in call]
