"""The SQS event source mapping, emulated: poll, batch, invoke, delete what succeeded.

Semantics kept from Lambda's mapping: batch size and batching window from the template's SQS
event, the queue's visibility timeout, ReportBatchItemFailures (only the failed items stay on
the queue), a crashed invocation leaves the whole batch, and the queue's own redrive policy
moves a message to the DLQ after maxReceiveCount receives (moto implements redrive).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from .runtime import LocalFunction

log = logging.getLogger("outpost_local.poller")


def sqs_event(messages: list[dict], queue_arn: str, region: str = "us-east-1") -> dict:
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {k: {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                                  "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"]}
                              for k, v in (m.get("MessageAttributes") or {}).items()},
        "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    } for m in messages]}


def delete_done(sqs: Any, url: str, done: list[dict]) -> None:
    """Delete the messages an invocation handled, ten to a call (as the event source mapping)."""
    for i in range(0, len(done), 10):
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done[i:i + 10])])


def _paused(function: Any) -> bool:
    """Whether the function's stack is paused (runtime.Gate; a test's stand-in has no gate)."""
    gate = getattr(function, "gate", None)
    return gate is not None and not gate.is_open


class _EventSource:
    """An event source emulated by a daemon thread running `_run` until stopped."""

    def __init__(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.invocations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        raise NotImplementedError


class _Polling(_EventSource):
    """An event source mapping that polls (SQS, a DynamoDB stream): `poll_once` until stopped,
    a short pause when it found nothing, and on an error a log line and a longer one (the
    mapping keeps polling, as Lambda's does)."""

    def poll_once(self) -> int:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once() == 0:
                    self._stop.wait(0.2)
            except Exception:  # noqa: BLE001 - the mapping keeps polling, as Lambda's does
                log.exception("%s error", type(self).__name__)
                self._stop.wait(1.0)


class SqsPoller(_Polling):
    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, function: LocalFunction, *,
                 batch_size: int = 10, window: float = 1.0, name: str = "sqs") -> None:
        self.sqs, self.url, self.arn, self.function = sqs, queue_url, queue_arn, function
        self.batch_size, self.window = batch_size, window
        super().__init__(f"poller-{name}")

    def poll_once(self) -> int:
        """Receive one batch (waiting up to the batching window) and invoke. Returns its size."""
        if _paused(self.function):  # paused (runtime.Gate): receive nothing meanwhile
            return 0
        messages: list[dict] = []
        deadline = time.monotonic() + self.window
        while len(messages) < self.batch_size and not self._stop.is_set():
            wait = max(0, int(round(deadline - time.monotonic())))
            r = self.sqs.receive_message(QueueUrl=self.url,
                                         MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                                         WaitTimeSeconds=min(wait, 1), AttributeNames=["All"],
                                         MessageAttributeNames=["All"])
            got = r.get("Messages", [])
            messages.extend(got)
            if not got or time.monotonic() >= deadline:
                break
        if not messages:
            return 0
        self.invocations += 1
        try:
            result = self.function.invoke(sqs_event(messages, self.arn)) or {}
        except Exception:  # noqa: BLE001 - a crash leaves the whole batch, as Lambda does
            log.exception("sender invocation failed; the batch stays on the queue")
            return len(messages)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        delete_done(self.sqs, self.url, [m for m in messages if m["MessageId"] not in failed])
        return len(messages)


def scheduled_event(rule_arn: str, region: str = "us-east-1") -> dict:
    """The event EventBridge sends a function on a schedule (events/schedule.json's shape)."""
    import uuid

    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": rule_arn.split(":")[4] if rule_arn.count(":") >= 5 else "",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": region,
            "resources": [rule_arn], "detail": {}}


class Scheduler(_EventSource):
    """A Schedule event source, emulated: invoke the function every `interval` seconds (the
    local stack runs schedules more often than the template's rate, so `make dev` shows them)."""

    def __init__(self, function: LocalFunction, rule_arn: str, interval: float) -> None:
        self.function, self.rule_arn, self.interval = function, rule_arn, interval
        super().__init__(f"schedule-{function.fn.logical_id}")

    def run_once(self) -> Any:
        self.invocations += 1
        return self.function.invoke(scheduled_event(self.rule_arn))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if _paused(self.function):  # paused (runtime.Gate): this tick is skipped
                continue
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a failed run is logged; the schedule goes on
                log.exception("scheduled invocation of %s failed", self.function.fn.logical_id)


# ---- DynamoDB streams (issue 12: the events function) ---------------------------------------
def matches(pattern: Any, value: Any) -> bool:
    """An event filter pattern (Lambda's FilterCriteria, EventBridge's syntax) against a
    record: nested objects, and at the leaves a list of exact values or {"prefix": ...}."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches(v, value[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        for p in pattern:
            if isinstance(p, dict) and "prefix" in p:
                if isinstance(value, str) and value.startswith(p["prefix"]):
                    return True
            elif p == value:
                return True
        return False
    return bool(pattern == value)


def _lambda_json(value: Any) -> Any:
    """boto3's stream record as Lambda's JSON: binary values in base64, times in epoch seconds."""
    import base64
    from datetime import datetime

    if isinstance(value, dict):
        return {k: _lambda_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_json(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def stream_event(records: list[dict], stream_arn: str, region: str = "us-east-1") -> dict:
    """The event Lambda sends a function for DynamoDB stream records
    (events/dynamodb_stream_recipient.json's shape)."""
    return {"Records": [{
        "eventID": r["eventID"], "eventName": r["eventName"], "eventVersion": r.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb", "awsRegion": region, "dynamodb": _lambda_json(r["dynamodb"]),
        "eventSourceARN": stream_arn,
    } for r in records]}


class StreamPoller(_Polling):
    """A DynamoDB stream event source mapping, emulated: every shard read from TRIM_HORIZON
    (a child shard after its parent is done: order per item is kept), records filtered by the
    mapping's FilterCriteria, batches of `batch_size` invoked in order; ReportBatchItemFailures
    resumes the shard at the first failed record, an invocation that raises retries the whole
    batch. After `max_retries` failed tries the batch is skipped and described on the
    `on_failure` queue (the mapping's OnFailure destination), as Lambda does."""

    def __init__(self, streams: Any, stream_arn: str, function: LocalFunction, *, batch_size: int = 100,
                 filters: list[dict] | None = None, max_retries: int = 20, on_failure: tuple[Any, str] | None = None,
                 retry_wait: float = 0.5, name: str = "stream") -> None:
        self.streams, self.arn, self.function = streams, stream_arn, function
        self.batch_size, self.filters, self.max_retries = batch_size, filters or [], max_retries
        self.on_failure, self.retry_wait = on_failure, retry_wait
        self.iterators: dict[str, str | None] = {}  # shard id -> next iterator (None: shard done)
        self.last_read: dict[str, str] = {}  # shard id -> the last sequence number read
        self.discovery_interval, self._next_discovery, self._closed_seen = 5.0, 0.0, 0
        self.failures = 0
        super().__init__(f"poller-{name}")

    def _shards(self) -> list[dict]:
        shards, kwargs = [], {"StreamArn": self.arn}
        while True:
            d = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(d.get("Shards", []))
            if not d.get("LastEvaluatedShardId"):
                return shards
            kwargs["ExclusiveStartShardId"] = d["LastEvaluatedShardId"]

    def _open_new_shards(self) -> None:
        shards = self._shards()
        known = {s["ShardId"] for s in shards}
        for s in shards:
            sid, parent = s["ShardId"], s.get("ParentShardId")
            if sid in self.iterators:
                continue
            if parent and parent in known and self.iterators.get(parent, "") is not None:
                continue  # its parent is not read to its end yet
            self.iterators[sid] = self.streams.get_shard_iterator(
                StreamArn=self.arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

    def poll_once(self) -> int:
        """Read each open shard once and invoke for what passes the filter; returns the number
        of records invoked."""
        if _paused(self.function):  # paused (runtime.Gate): read nothing meanwhile
            return 0
        now, closed = time.monotonic(), sum(v is None for v in self.iterators.values())
        if now >= self._next_discovery or closed > self._closed_seen:
            # New shards appear when one closes (a split) or rolls over (every ~4 h in AWS):
            # look every few seconds, and at once after a shard closed; not on every read.
            self._open_new_shards()
            self._next_discovery, self._closed_seen = now + self.discovery_interval, closed
        done = 0
        for sid, it in list(self.iterators.items()):
            if it is not None:
                done += self._read_shard(sid, it)
        return done

    def _iterator(self, sid: str) -> str:
        """A fresh iterator: after the last record read from the shard, or its start."""
        last = self.last_read.get(sid)
        kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": last} if last \
            else {"ShardIteratorType": "TRIM_HORIZON"}
        return str(self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=sid, **kwargs)["ShardIterator"])

    def _read_shard(self, sid: str, it: str) -> int:
        try:
            r = self.streams.get_records(ShardIterator=it, Limit=self.batch_size)
        except (self.streams.exceptions.TrimmedDataAccessException,
                self.streams.exceptions.ExpiredIteratorException):
            # DynamoDB Local refuses an iterator taken on a shard that was still empty once
            # records arrive ("read past the oldest stream record"); AWS expires iterators
            # after 15 minutes. Either way: a new one from where this reader is.
            r = self.streams.get_records(ShardIterator=self._iterator(sid), Limit=self.batch_size)
        got = r.get("Records", [])
        records = [x for x in got if not self.filters or any(matches(f, x) for f in self.filters)]
        nxt = r.get("NextShardIterator")
        failed_at = self._invoke(records) if records else None
        if failed_at is None:
            if got:
                self.last_read[sid] = got[-1]["dynamodb"]["SequenceNumber"]
        else:  # resume at the first failed record
            before = [x for x in got if int(x["dynamodb"]["SequenceNumber"]) < int(failed_at)]
            if before:
                self.last_read[sid] = before[-1]["dynamodb"]["SequenceNumber"]
            nxt = self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=sid,
                                                  ShardIteratorType="AT_SEQUENCE_NUMBER",
                                                  SequenceNumber=failed_at)["ShardIterator"]
        self.iterators[sid] = nxt
        return len(records)

    def _invoke(self, records: list[dict]) -> str | None:
        """Invoke until the batch succeeds or runs out of retries; the sequence number to resume
        at, or None to go on after the batch."""
        for attempt in range(self.max_retries + 1):
            self.invocations += 1
            try:
                result = self.function.invoke(stream_event(records, self.arn)) or {}
            except Exception:  # noqa: BLE001 - the whole batch is retried, as Lambda does
                log.exception("events invocation failed; the batch is retried")
                failed = [records[0]["dynamodb"]["SequenceNumber"]]
            else:
                failed = [f["itemIdentifier"] for f in result.get("batchItemFailures", [])]
            if not failed:
                return None
            self.failures += 1
            first = min(failed, key=int)
            if attempt < self.max_retries and first != records[0]["dynamodb"]["SequenceNumber"]:
                return first  # resume at the first failed record (a new batch from there)
            if self._stop.is_set():
                return first  # stopping: leave the batch for the next reader
            if attempt < self.max_retries:
                self._stop.wait(self.retry_wait)
        self._give_up(records)
        return None

    def _give_up(self, records: list[dict]) -> None:
        import json

        log.error("events batch failed %d times; skipped (OnFailure)", self.max_retries + 1)
        if self.on_failure is not None:
            sqs, url = self.on_failure
            seqs = [x["dynamodb"]["SequenceNumber"] for x in records]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"DDBStreamBatchInfo": {
                "streamArn": self.arn, "startSequenceNumber": seqs[0], "endSequenceNumber": seqs[-1],
                "batchSize": len(records)}}))
