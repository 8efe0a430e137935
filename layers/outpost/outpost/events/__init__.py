"""Events (issue 12): one event per recipient state change, the one shape every consumer sees
(the event log, GET /v1/events, webhooks, EventBridge).

An event is derived from the recipients table's change (a DynamoDB stream record), never
told by the code that made the change, so a sender that crashes after its write still
produces it. Its `event_id` is a pure function of the change (message, recipient index, new
state and attempt count), so a stream record read twice gives the same event, and a
webhook's `webhook-id` (the event id) stays the same across retries.

Producers: `events.source` (stream records -> events). Consumers implement `EventSink`:
the event log (the store), EventBridge (`events.bus`), webhooks (`outpost.webhooks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..models import RecipientState
from ..records import Record

# `message.<state>` for every recipient state: queued, deferred, delivered, bounced, expired,
# suppressed, complained (the contract); scheduled and canceled (issue 14).
EVENT_TYPES: tuple[str, ...] = tuple(f"message.{s.value}" for s in RecipientState)


@dataclass(frozen=True)
class Event(Record):
    """One recipient state change as every consumer sees it. `data` holds at least
    message_id, recipient, state and tags; `attempt` (mx, ip, tls, code, status, text) for
    delivered and deferred; `bounce` (kind, reason, status, diagnostic) for bounced and
    complained."""

    event_id: str  # "evt_..." stable for the change (see the module docstring)
    type: str  # one of EVENT_TYPES
    timestamp: str  # RFC 3339 (clock.iso: UTC, milliseconds, Z)
    message_id: str
    recipient: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON body a webhook receives and EventBridge carries as `detail`:
        {"type", "timestamp", "data"} (the issue's contract)."""
        return {"type": self.type, "timestamp": self.timestamp, "data": dict(self.data)}


class EventSink(Protocol):
    """Where events go. `publish` may be given the same event again (a stream record read
    twice, a retried batch): a sink is idempotent on `event_id`. It raises to have the batch
    retried; it never drops an event silently."""

    def publish(self, events: Sequence[Event]) -> None: ...
