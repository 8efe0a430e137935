"""Not queued means not accepted: when SQS refuses the job, the stored message is taken back and
the caller gets an error to retry, so no recipient is left open with no job to move it."""

from __future__ import annotations

import pytest

from outpost.api.service import SendService
from outpost.bootstrap import aws, domains_table, message_store, suppression_store
from outpost.models import SendRequest
from outpost.store import JobQueue
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(60)


def _rows_for(address: str) -> list:
    r = aws("dynamodb").query(TableName=message_store().table, IndexName="gsi1",
                              KeyConditionExpression="gsi1pk = :p",
                              ExpressionAttributeValues={":p": {"S": f"RCPT#{address}"}})
    return r["Items"]


def _service(queue_url: str) -> SendService:
    # A real SQS client against moto, with a queue URL that does not exist: SQS really refuses.
    return SendService(store=message_store(), suppressions=suppression_store(),
                       queue=JobQueue(aws("sqs"), queue_url), domains=domains_table())


def test_single_send_is_taken_back_when_the_queue_refuses(local_stack):
    svc = _service(local_stack.stack.physical["SendQueue"] + "-gone")
    req = SendRequest.model_validate({"from": f"shop@{SENDING_DOMAIN}", "to": "lost-one@accept.test",
                                      "subject": "x", "text": "y"})
    with pytest.raises(Exception, match="NonExistentQueue|QueueDoesNotExist|does not exist"):
        svc.send(req)
    assert _rows_for("lost-one@accept.test") == []


def test_batch_items_not_queued_are_taken_back_and_answered_503(local_stack):
    svc = _service(local_stack.stack.physical["SendQueue"] + "-gone")
    out, _ = svc.send_batch([{"from": f"shop@{SENDING_DOMAIN}", "to": "lost-two@accept.test",
                           "subject": "x", "text": "y"},
                          {"from": f"shop@{SENDING_DOMAIN}", "to": "bad-address", "subject": "x", "text": "y"}])
    statuses = [r["status"] for r in out["results"]]
    assert statuses == [503, 422]
    assert "id" not in out["results"][0]
    assert _rows_for("lost-two@accept.test") == []
