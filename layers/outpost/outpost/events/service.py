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

from ..records import Message, Recipient
from . import Event, EventSink
from .source import as_created, event_for, is_event

log = logging.getLogger("outpost.events")

Change = tuple[Recipient | None, Recipient | None]


class EventService:
    """Stream records to events to sinks. `changes` reads a record's `dynamodb` part (None:
    not a recipient item), `tags` the tags of messages by id (both the store's).

    Creation events come from one place (s16f; s17b removed the second): the META item's
    INSERT, the commit point (`commits`), gives the creation event of each of its recipients
    (`created` reads them); a recipient's INSERT gives none. `created` is given the recipients
    whose INSERTs came earlier in the same batch (the usual case: a create puts its recipients,
    then its META, within milliseconds), so it reads only the others and the META (whose absence
    means the message was discarded since: no events)."""

    def __init__(self, *, changes: Callable[[Mapping[str, Any]], Change | None],
                 tags: Callable[[Iterable[str]], Mapping[str, Mapping[str, str]]],
                 sinks: Sequence[EventSink], count: Callable[[str, int], None] | None = None,
                 commits: Callable[[Mapping[str, Any]], Message | None],
                 created: Callable[[str, int, Mapping[int, Recipient]], list[Recipient] | None]) -> None:
        self.changes, self.tags, self.sinks = changes, tags, list(sinks)
        self.count = count or (lambda name, n: None)
        self.commits, self.created = commits, created

    def events_of(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Event]]:
        """(sequence number, event) for each record that is a recipient state change, in order;
        a META's INSERT gives the creation event of each of its recipients (see
        `_created_events`) and a recipient's INSERT none."""
        found: list[tuple[str, Change]] = []
        by_commit: dict[str, list[Event]] = {}
        inserted: dict[str, dict[int, Recipient]] = {}  # this batch's recipient INSERT images
        for rec in records:
            ddb = rec.get("dynamodb") or {}
            seq = str(ddb.get("SequenceNumber", ""))
            if (meta := self.commits(ddb)) is not None:
                by_commit[seq] = self._created_events(meta, inserted.get(meta.message_id, {}))
                found.append((seq, (None, None)))  # its place in the order
                continue
            change = self.changes(ddb)
            if change is None:
                continue
            old, new = change
            if old is None and new is not None:  # put once, by the create: its creation state
                inserted.setdefault(new.message_id, {})[new.index] = new
            elif is_event(old, new):
                found.append((seq, change))
        return self._in_order(found, by_commit)

    def _created_events(self, meta: Message, known: Mapping[int, Recipient]) -> list[Event]:
        """A committed message's creation events (`message.queued`, `.scheduled` or
        `.suppressed`), one per recipient, as its recipients' INSERTs gave them: the same ids.
        From the commit, because a create killed between its puts leaves recipients (and their
        INSERTs) without a META until store.UNCOMMITTED_AGE, for a message that answers 404 and
        never ends; a message discarded since (its META gone) gives none. `known`: the
        recipients whose INSERT images this batch had (not read again)."""
        recipients = self.created(meta.message_id, meta.recipient_count, known) or []
        out = [event_for(None, as_created(r, meta.send_at is not None), meta.tags) for r in recipients]
        return [e for e in out if e is not None]

    def _in_order(self, found: list[tuple[str, Change]],
                  by_commit: Mapping[str, list[Event]]) -> list[tuple[str, Event]]:
        """The batch's events in record order: a commit's where its META's INSERT was."""
        changes = [(seq, c) for seq, c in found if seq not in by_commit]
        tags = self.tags({n.message_id for _, (_, n) in changes if n is not None}) if changes else {}
        out: list[tuple[str, Event]] = []
        for seq, (old, new) in found:
            if seq in by_commit:
                out.extend((seq, e) for e in by_commit[seq])
            elif (ev := event_for(old, new, tags.get(new.message_id) if new is not None else None)) is not None:
                out.append((seq, ev))
        return out

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
        by_seq: dict[str, list[Event]] = {}
        for seq, e in pairs:  # a commit's record gives one event per recipient
            by_seq.setdefault(seq, []).append(e)
        return self._one_by_one(dict(event), by_seq, context)

    def _one_by_one(self, event: dict, by_seq: Mapping[str, list[Event]], context: Any) -> dict:
        from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

        def one(record: Any) -> None:
            evs = by_seq.get(str(record.dynamodb.sequence_number if record.dynamodb else ""))
            if evs:
                self.publish(evs)

        # Every record failing raises BatchProcessingError: the invocation fails, and Lambda
        # retries the batch (bisecting it, BisectBatchOnFunctionError).
        return dict(process_partial_response(event=event, record_handler=one,
                                             processor=BatchProcessor(event_type=EventType.DynamoDBStreams),
                                             context=context))
