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


class SqsPoller(_EventSource):
    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, function: LocalFunction, *,
                 batch_size: int = 10, window: float = 1.0, name: str = "sqs") -> None:
        self.sqs, self.url, self.arn, self.function = sqs, queue_url, queue_arn, function
        self.batch_size, self.window = batch_size, window
        super().__init__(f"poller-{name}")

    def poll_once(self) -> int:
        """Receive one batch (waiting up to the batching window) and invoke. Returns its size."""
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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once() == 0:
                    self._stop.wait(0.2)
            except Exception:  # noqa: BLE001 - the mapping keeps polling, as Lambda's does
                log.exception("poller error")
                self._stop.wait(1.0)


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
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a failed run is logged; the schedule goes on
                log.exception("scheduled invocation of %s failed", self.function.fn.logical_id)
