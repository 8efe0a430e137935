"""In-memory fakes of the webhook store (store.Webhooks), its queue (store.WebhookJobs) and the
event log (webhooks.service.EventLog: s12a's store.EventLog signature), for the unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from outpost.events import Event
from outpost.store import Page
from outpost.webhooks.jobs import WebhookJob
from outpost.webhooks.records import WebhookAttempt, WebhookEndpoint, WebhookSecret


class FakeWebhooks:
    def __init__(self) -> None:
        self.endpoints_by_id: dict[str, WebhookEndpoint] = {}
        self.states: dict[tuple[str, str], str] = {}
        self.attempt_log: list[WebhookAttempt] = []

    def add_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        if endpoint.endpoint_id in self.endpoints_by_id:
            return False
        self.endpoints_by_id[endpoint.endpoint_id] = endpoint
        return True

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self.endpoints_by_id.get(endpoint_id)

    def endpoints(self) -> list[WebhookEndpoint]:
        return sorted(self.endpoints_by_id.values(), key=lambda e: e.endpoint_id)

    def delete_endpoint(self, endpoint_id: str) -> bool:
        return self.endpoints_by_id.pop(endpoint_id, None) is not None

    def update_endpoint(self, endpoint_id: str, *, only_if_enabled: bool = False,
                        **changes: Any) -> WebhookEndpoint | None:
        e = self.endpoints_by_id.get(endpoint_id)
        if e is None or (only_if_enabled and not e.enabled):
            return None
        if "secrets" in changes:
            changes["secrets"] = tuple(s if isinstance(s, WebhookSecret) else WebhookSecret.from_dict(s)
                                       for s in changes["secrets"])
        e = e.replace(**changes)
        self.endpoints_by_id[endpoint_id] = e
        return e

    def known_events(self, endpoint_id: str, event_ids: Iterable[str]) -> set[str]:
        return {e for e in event_ids if (endpoint_id, e) in self.states}

    def note_events(self, endpoint_id: str, event_ids: Iterable[str], now: float) -> None:
        for e in event_ids:
            self.states.setdefault((endpoint_id, e), "queued")

    def delivered_pairs(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {p for p in pairs if self.states.get(p) == "delivered"}

    def record_attempt(self, attempt: WebhookAttempt, now: float) -> None:
        self.attempt_log.append(attempt)
        if attempt.status == "delivered":
            self.states[(attempt.endpoint_id, attempt.event_id)] = "delivered"

    def attempts(self, endpoint_id: str, limit: int = 25) -> list[WebhookAttempt]:
        return [a for a in reversed(self.attempt_log) if a.endpoint_id == endpoint_id][:limit]


class FakeWebhookJobs:
    def __init__(self) -> None:
        self.sent: list[tuple[WebhookJob, float]] = []

    def send(self, job: WebhookJob, delay: float = 0) -> None:
        self.sent.append((job, delay))

    def send_many(self, jobs: Sequence[WebhookJob]) -> None:
        self.sent.extend((j, 0.0) for j in jobs)

    def take(self) -> list[WebhookJob]:
        out = [j for j, _ in self.sent]
        self.sent.clear()
        return out


class FakeEventLog:
    """Events kept in memory; `events()` as the log's query: since (inclusive), type,
    message_id, limit, oldest_first, and an opaque cursor (the offset to go on from)."""

    def __init__(self, events: Sequence[Event] = ()) -> None:
        self.items: list[Event] = list(events)
        self.queries = 0

    def add_events(self, events: Sequence[Event], now: float) -> int:
        known = {e.event_id for e in self.items}
        fresh = [e for e in events if e.event_id not in known]
        self.items.extend(fresh)
        return len(fresh)

    def events(self, *, since: str | None = None, type: str | None = None, message_id: str | None = None,
               limit: int = 50, cursor: str | None = None, oldest_first: bool = False) -> Page[Event]:
        self.queries += 1
        found = [e for e in self.items if (since is None or e.timestamp >= since)
                 and (type is None or e.type == type) and (message_id is None or e.message_id == message_id)]
        found.sort(key=lambda e: (e.timestamp, e.event_id), reverse=not oldest_first)
        start = int(cursor or 0)
        more = start + limit < len(found)
        return Page(found[start:start + limit], None, cursor=str(start + limit) if more else None)
