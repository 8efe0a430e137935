"""The local stack's SQS event source mapping against moto's real SQS API: successes are
deleted, ReportBatchItemFailures leaves only the failed items, a crashed invocation leaves the
whole batch, and the queue's redrive policy parks a message in the DLQ after maxReceiveCount."""

from __future__ import annotations

import json
import secrets
import time

import boto3
import pytest

from outpost_local.poller import SqsPoller

pytestmark = pytest.mark.timeout(60)


class _Fn:
    """A stand-in function: records every event, fails what the test says."""

    def __init__(self, fail_bodies: set[str] = frozenset(), crash: bool = False) -> None:
        self.events: list[dict] = []
        self.fail_bodies, self.crash = set(fail_bodies), crash

    def invoke(self, event: dict) -> dict:
        self.events.append(event)
        if self.crash:
            raise RuntimeError("boom")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r in event["Records"] if r["body"] in self.fail_bodies]}


@pytest.fixture()
def queues(local_stack):
    sqs = boto3.client("sqs")
    name = "poller-" + secrets.token_hex(4)
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, q, arn, dlq


def _count(sqs, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                               "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def test_batch_shape_and_partial_failures(queues):
    sqs, q, arn, _ = queues
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=q, MessageBody=body)
    fn = _Fn(fail_bodies={"b"})
    poller = SqsPoller(sqs, q, arn, fn, batch_size=10, window=0.5)
    assert poller.poll_once() == 3
    record = fn.events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["attributes"]["ApproximateReceiveCount"] == "1" and record["receiptHandle"]
    assert _count(sqs, q) == 1  # only the failed one stays
    time.sleep(1.2)
    fn2 = _Fn()
    assert SqsPoller(sqs, q, arn, fn2, window=0.5).poll_once() == 1
    assert fn2.events[0]["Records"][0]["body"] == "b"
    assert _count(sqs, q) == 0


def test_crash_leaves_the_batch_and_redrive_parks_it_in_the_dlq(queues):
    sqs, q, arn, dlq = queues
    sqs.send_message(QueueUrl=q, MessageBody="poison")
    crashing = SqsPoller(sqs, q, arn, _Fn(crash=True), window=0.5)
    assert crashing.poll_once() == 1
    time.sleep(1.2)
    assert crashing.poll_once() == 1  # second receive, still failing
    time.sleep(1.2)
    assert crashing.poll_once() == 0  # maxReceiveCount reached: moved to the DLQ
    got = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in got] == ["poison"]
