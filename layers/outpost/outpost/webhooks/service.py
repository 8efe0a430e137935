"""The webhooks API without HTTP (api/webhooks.py is the HTTP side): register an endpoint,
list and show them (with recent deliveries), delete, rotate the secret, replay events.

  create   the URL checked (ssrf.check_url: 422 naming `url`), the event types checked
           (422 naming `events`); a new secret, answered once and never shown again
  rotate   a new secret, answered once; the previous one keeps signing beside it for
           ROTATION_OVERLAP (24 h), then stops (each delivery signs with those current)
  replay   the endpoint's subscribed events from the event log since a time, oldest first,
           queued again as replays (same webhook-id, the event id; sent even if delivered)
"""

from __future__ import annotations

import secrets as _secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..clock import iso, iso_of
from ..errors import InvalidRequestError, NotFoundError, WebhookUrlError
from ..events import EVENT_TYPES, Event
from ..store import EventLog, WebhookJobs, Webhooks
from .records import ROTATION_OVERLAP, WebhookEndpoint, WebhookSecret
from .signing import new_secret
from .sink import job_for
from .ssrf import Resolve, check_url

MAX_DESCRIPTION = 500
REPLAY_LIMIT = 1000  # events queued by one replay request; the answer says where to go on
REPLAY_PAGE = 200
REPLAY_READS = 50  # log pages one replay request reads (10,000 events): an endpoint of rare types
#                    over a large log is answered in bounded time, `next_since` where it stopped
RECENT_DELIVERIES = 25


def check_events(events: Sequence[str]) -> tuple[str, ...]:
    unknown = [e for e in events if e not in EVENT_TYPES]
    if not events or unknown:
        raise InvalidRequestError(f"events: {', '.join(map(repr, unknown)) or 'none given'}: each must be one of "
                                  + ", ".join(EVENT_TYPES), field="events")
    return tuple(dict.fromkeys(events))


class WebhookService:
    def __init__(self, store: Webhooks, queue: WebhookJobs, *, resolve: Resolve, allow_local: bool = False,
                 log: EventLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store, self.queue, self.resolve, self.allow_local = store, queue, resolve, allow_local
        self.log, self.clock = log, clock

    def _endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        endpoint = self.store.endpoint(endpoint_id)
        if endpoint is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", field="id")
        return endpoint

    def create(self, url: str, events: Sequence[str], description: str = "") -> dict[str, Any]:
        try:
            check_url(url, resolve=self.resolve, allow_local=self.allow_local)
        except WebhookUrlError as exc:
            raise InvalidRequestError(f"url: {exc}", field="url") from None
        types = check_events(events)
        now = self.clock()
        secret = new_secret()
        endpoint = WebhookEndpoint(endpoint_id="wh_" + _secrets.token_hex(8), url=url.strip(), events=types,
                                   created_at=iso(now), description=description[:MAX_DESCRIPTION],
                                   secrets=(WebhookSecret(secret, iso(now)),))
        self.store.add_endpoint(endpoint)
        return dict(endpoint.view(), secret=secret)

    def list_endpoints(self) -> dict[str, Any]:
        return {"items": [e.view() for e in sorted(self.store.endpoints(), key=lambda e: e.created_at)]}

    def get(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self._endpoint(endpoint_id)
        deliveries = [a.as_dict() for a in self.store.attempts(endpoint_id, RECENT_DELIVERIES)]
        for d in deliveries:
            d.pop("endpoint_id", None)
            d.setdefault("code", None)  # no HTTP answer (refused, timed out): said, not left out
        return dict(endpoint.view(), deliveries=deliveries)

    def delete(self, endpoint_id: str) -> dict[str, Any]:
        if not self.store.delete_endpoint(endpoint_id):
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", field="id")
        return {"id": endpoint_id, "deleted": True}

    def rotate(self, endpoint_id: str) -> dict[str, Any]:
        """A new current secret; the previous current one signs beside it until now + 24 h
        (one already in its overlap keeps its own end); expired ones are dropped."""
        endpoint = self._endpoint(endpoint_id)
        now = self.clock()
        until = now + ROTATION_OVERLAP
        kept = [s if s.until is not None else s.replace(until=until)
                for s in endpoint.secrets if s.until is None or s.until > now]
        secret = new_secret()
        updated = self.store.update_endpoint(endpoint_id, secrets=[WebhookSecret(secret, iso(now)), *kept])
        if updated is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", field="id")
        return dict(updated.view(), secret=secret, previous_secret_expires_at=iso(until))

    def enable(self, endpoint_id: str) -> dict[str, Any]:
        """Turn a disabled endpoint back on (its URL checked again, as at registration), with
        its failing period forgotten. The events it missed while disabled are not sent by
        this: `replayed_since` says where POST .../replay should start (its disabled_at)."""
        endpoint = self._endpoint(endpoint_id)
        try:
            check_url(endpoint.url, resolve=self.resolve, allow_local=self.allow_local)
        except WebhookUrlError as exc:
            raise InvalidRequestError(f"url: {exc}", field="url") from None
        updated = self.store.update_endpoint(endpoint_id, enabled=True, disabled_at=None,
                                             disabled_reason=None, failing_since=None)
        if updated is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", field="id")
        return dict(updated.view(), missed_since=endpoint.disabled_at)

    def replay(self, endpoint_id: str, since: datetime) -> dict[str, Any]:
        """Queue the endpoint's subscribed events since `since` again, oldest first (at most
        REPLAY_LIMIT; `next_since` then says where to go on)."""
        endpoint = self._endpoint(endpoint_id)
        if self.log is None:
            raise NotFoundError("there is no event log on this stack", field="since")
        events, next_since = self._events_since(iso_of(since), set(endpoint.events))
        for i in range(0, len(events), 100):
            self.queue.send_many([job_for(e, endpoint, replay=True) for e in events[i:i + 100]])
        return {"id": endpoint_id, "replayed": len(events), "next_since": next_since}

    def _events_since(self, since: str, types: set[str]) -> tuple[list[Event], str | None]:
        """The log forward from `since`, page by page (its cursor), the endpoint's types only,
        and where to go on (None: the end): after REPLAY_LIMIT events, or REPLAY_READS pages,
        the timestamp of the last one taken or read (inclusive: that event may come twice)."""
        assert self.log is not None
        out: list[Event] = []
        cursor: str | None = None
        read = since
        for _ in range(REPLAY_READS):
            page = self.log.events(since=since, limit=REPLAY_PAGE, cursor=cursor, oldest_first=True)
            for e in page.items:
                read = e.timestamp
                if e.type in types:
                    out.append(e)
                    if len(out) >= REPLAY_LIMIT:
                        return out, e.timestamp
            if page.cursor is None:
                return out, None
            cursor = page.cursor
        return out, read
