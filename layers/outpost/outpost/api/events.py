"""GET /v1/events without HTTP (routes.py is the HTTP side): the event log (issue 12), newest
first, filtered by type, message and time, with the other lists' opaque cursor.

An item is the event as a webhook receives it (type, timestamp, data) plus its `id` (the
webhook's `webhook-id`, stable for the change)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from ..errors import InvalidRequestError
from ..events import EVENT_TYPES
from ..models import _Model
from ..store import EventLog
from .paging import since_iso


class EventView(_Model):
    id: str = Field(description="the event id (a webhook's webhook-id), stable for the change")
    type: str = Field(description="message.queued, .delivered, .deferred, .bounced, .complained, .expired, "
                                  ".suppressed, .scheduled, .canceled")
    timestamp: str = Field(description="RFC 3339: when the recipient's state changed")
    data: dict[str, Any] = Field(description="message_id, recipient, state, tags; attempt (mx, ip, tls, code, "
                                             "status, text) for delivered and deferred; bounce (kind, reason, "
                                             "status, diagnostic) for bounced and complained")


class EventList(_Model):
    items: list[EventView]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class EventsApi:
    def __init__(self, log: EventLog) -> None:
        self.log = log

    def list(self, *, type: str | None, message_id: str | None, since: datetime | None, limit: int,
             cursor: str | None) -> dict:
        if type is not None and type not in EVENT_TYPES:  # the route's declared enum says the same
            raise InvalidRequestError(f"type: {type!r} is not one of {', '.join(EVENT_TYPES)}", field="type")
        page = self.log.events(since=since_iso(since), type=type, message_id=message_id, limit=limit,
                               cursor=cursor)
        return {"items": [{"id": e.event_id, **e.payload()} for e in page.items], "next_cursor": page.cursor}
