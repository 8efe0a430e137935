"""The events function's one job: a batch of DynamoDB stream records (recipient changes) ->
events (events/source.py) -> every sink, in order: the event log first, then EventBridge and
the webhooks (bootstrap.event_sinks builds the list).

A batch's events go to each sink together (EventBridge in tens). When a sink fails, the batch
is done again record by record through Powertools' BatchProcessor, so only the records whose
events did not reach every sink are reported (ReportBatchItemFailures) and retried by Lambda
from the first of them; the sinks are idempotent on event_id, so the records that did reach
them duplicate nothing. Reading the changes or the message tags failing fails the whole batch.

The message tags are read once per message in the batch (the store's META items, one
BatchGetItem), not copied onto recipient items: no change to the write path, no larger
recipient items, and a recipient stored before issue 12 gets its tags too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..records import Recipient
from . import Event, EventSink
from .source import event_for, is_event

log = logging.getLogger("outpost.events")

Change = tuple[Recipient | None, Recipient | None]


class EventService:
    """Stream records to events to sinks. `changes` reads a record's `dynamodb` part (None:
    not a recipient item), `tags` the tags of messages by id, `gone` which recipients no
    longer exist (all three the store's; without `gone`, nothing is left out)."""

    def __init__(self, *, changes: Callable[[Mapping[str, Any]], Change | None],
                 tags: Callable[[Iterable[str]], Mapping[str, Mapping[str, str]]],
                 sinks: Sequence[EventSink], count: Callable[[str, int], None] | None = None,
                 gone: Callable[[Iterable[tuple[str, int]]], set[tuple[str, int]]] | None = None) -> None:
        self.changes, self.tags, self.sinks = changes, tags, list(sinks)
        self.count = count or (lambda name, n: None)
        self.gone = gone

    def events_of(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Event]]:
        """(sequence number, event) for each record that is a recipient state change, in order."""
        found: list[tuple[str, Change]] = []
        for rec in records:
            ddb = rec.get("dynamodb") or {}
            change = self.changes(ddb)
            if change is not None and is_event(*change):
                found.append((str(ddb.get("SequenceNumber", "")), change))
        tags = self.tags({new.message_id for _, (_, new) in found if new is not None}) if found else {}
        found = self._committed(found, tags)
        out = []
        for seq, (old, new) in found:
            ev = event_for(old, new, tags.get(new.message_id) if new is not None else None)
            if ev is not None:
                out.append((seq, ev))
        return out

    def _committed(self, found: list[tuple[str, Change]], tags: Mapping[str, Any]) -> list[tuple[str, Change]]:
        """Leave out new recipients of a create that never committed (s16e): no META item (no
        tags read) and the recipient already deleted, by the create's take-back after a failed
        put or the API's discard after a failed enqueue (the client got a 503). Their
        `message.queued` went to every sink for a message that 404s and never ends. One whose
        META is only late (the create still running) still exists, so it keeps its event; one
        killed between its puts keeps it until deleted (store.UNCOMMITTED_AGE): see README."""
        new = {(n.message_id, n.index) for _, (o, n) in found if o is None and n is not None
               and n.message_id not in tags}
        if not new or self.gone is None:
            return found
        gone = self.gone(new)
        return [(seq, (o, n)) for seq, (o, n) in found
                if not (o is None and n is not None and (n.message_id, n.index) in gone)]

    def publish(self, events: Sequence[Event]) -> None:
        """Every sink in order (the log first); the first failure raises."""
        if not events:
            return
        for sink in self.sinks:
            sink.publish(events)

    def handle_stream_event(self, event: Mapping[str, Any], context: Any = None) -> dict:
        """A DynamoDB stream batch as Lambda delivers it; answers {"batchItemFailures": [...]}."""
        records = list(event.get("Records") or [])
        pairs = self.events_of(records)
        try:
            self.publish([e for _, e in pairs])
            self.count("EventsPublished", len(pairs))
            return {"batchItemFailures": []}
        except Exception:  # noqa: BLE001 - retried record by record below
            log.warning("a sink failed for the batch; retrying record by record", exc_info=True)
            self.count("EventSinkFailed", 1)
        return self._one_by_one(dict(event), dict(pairs), context)

    def _one_by_one(self, event: dict, by_seq: Mapping[str, Event], context: Any) -> dict:
        from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

        def one(record: Any) -> None:
            ev = by_seq.get(str(record.dynamodb.sequence_number if record.dynamodb else ""))
            if ev is not None:
                self.publish([ev])

        # Every record failing raises BatchProcessingError: the invocation fails, and Lambda
        # retries the batch (bisecting it, BisectBatchOnFunctionError).
        return dict(process_partial_response(event=event, record_handler=one,
                                             processor=BatchProcessor(event_type=EventType.DynamoDBStreams),
                                             context=context))
