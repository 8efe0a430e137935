"""WebhookSink: the events' consumer that fans out to webhook endpoints (issue 12 item 2).

`publish(events)` queues one delivery job per (event, endpoint) for every enabled endpoint
subscribed to the event's type, and nothing else: no HTTP here, so an endpoint, however slow
or dead, never delays the events function (nor the sender, which never sees webhooks).

Idempotent on event_id: a job already queued for an (event, endpoint) pair is not queued again
(the store remembers each pair; a read first, queued second, remembered third, so a crash in
between queues a duplicate at worst, and the dispatcher drops a job whose event was already
delivered to that endpoint). It raises when it cannot queue, so the caller's batch is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..events import Event
from ..store import WebhookJobs, Webhooks
from .jobs import WebhookJob
from .records import WebhookEndpoint


def job_for(event: Event, endpoint: WebhookEndpoint, *, replay: bool = False) -> WebhookJob:
    return WebhookJob(event_id=event.event_id, endpoint_id=endpoint.endpoint_id, type=event.type,
                      payload=event.payload(), replay=replay)


class WebhookSink:
    def __init__(self, store: Webhooks, queue: WebhookJobs, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.queue, self.clock = store, queue, clock

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for endpoint in self.store.endpoints():
            if not endpoint.enabled:
                continue
            wanted = [e for e in events if e.type in endpoint.events]
            if not wanted:
                continue
            known = self.store.known_events(endpoint.endpoint_id, [e.event_id for e in wanted])
            fresh = list({e.event_id: e for e in wanted if e.event_id not in known}.values())
            if fresh:
                self.queue.send_many([job_for(e, endpoint) for e in fresh])
                self.store.note_events(endpoint.endpoint_id, [e.event_id for e in fresh], self.clock())
