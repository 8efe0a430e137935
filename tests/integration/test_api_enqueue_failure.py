"""Committed is accepted (s17f): when SQS refuses the job after the create's commit (its META
put), the message is not taken back (the events function may already have published
message.queued from the META's INSERT): the API answers 202 (a batch item its accepted answer,
SMTP submission 250), and the message's open recipients are marked overdue in the due index, so
the sweeper's next run queues the job rather than one after SWEEP_GRACE. On the session's local
stack: DynamoDB Local, moto's SQS refusing for real (a queue URL that does not exist), the
Powertools idempotency layer on its real table, and a real submission server over verified TLS.
tests/integration/test_store_crash_points.py follows such a message through the real stream,
sweeper, sender and MX."""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from typing import Any

import pytest

from outpost.api.auth import KeyRing
from outpost.api.service import SendService
from outpost.bootstrap import api_keys_table, aws, domains_table, idempotency_store, message_store, suppression_store
from outpost.clock import iso
from outpost.models import SendRequest
from outpost.store import JobQueue
from outpost.submission.server import SubmissionServer
from outpost.submission.settings import SubmissionSettings
from outpost.sweeper import SWEEP_GRACE
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(120)


def _rows_for(address: str) -> list:
    r = aws("dynamodb").query(TableName=message_store().table, IndexName="gsi1",
                              KeyConditionExpression="gsi1pk = :p",
                              ExpressionAttributeValues={":p": {"S": f"RCPT#{address}"}})
    return r["Items"]


def _service(local_stack: Any, idempotent: bool = False) -> SendService:
    # A real SQS client against moto, with a queue URL that does not exist: SQS really refuses.
    queue = JobQueue(aws("sqs"), local_stack.stack.physical["SendQueue"] + "-gone")
    return SendService(store=message_store(), suppressions=suppression_store(), queue=queue,
                       domains=domains_table(), idempotency=idempotency_store() if idempotent else None)


def _swept_next(message_id: str, after: float) -> list[float]:
    """The due times of `message_id`'s recipients that the sweeper's run at `after` finds overdue
    (its query: due before the run's time less SWEEP_GRACE)."""
    return [o.due_at for o in message_store().overdue(after - SWEEP_GRACE, 10_000) if o.message_id == message_id]


def _body(to: str, **more: Any) -> dict:
    return {"from": f"shop@{SENDING_DOMAIN}", "to": to, "subject": "x", "text": "y", **more}


def test_a_single_send_whose_job_is_refused_is_accepted_and_due_at_the_next_sweep(local_stack: Any) -> None:
    before = time.time()
    out, replayed = _service(local_stack).send(SendRequest.model_validate(_body("lost-one@accept.test")))
    assert out["recipients"] == [{"address": "lost-one@accept.test", "status": "queued"}] and not replayed
    assert len(_rows_for("lost-one@accept.test")) == 1
    due = _swept_next(out["id"], time.time() + 1)
    assert len(due) == 1 and before - SWEEP_GRACE <= due[0] <= time.time() - SWEEP_GRACE  # marked: created - grace
    stored = message_store().load(out["id"])
    assert stored is not None and stored.meta.created_ts is not None
    assert due == [stored.meta.created_ts - SWEEP_GRACE]
    # The mark's condition on DynamoDB: a recipient no longer due as created is not moved again.
    assert message_store().mark_overdue(out["id"], stored.recipients, stored.meta.created_ts, SWEEP_GRACE) is None


def test_a_batch_whose_jobs_are_refused_answers_each_accepted(local_stack: Any) -> None:
    out, _ = _service(local_stack).send_batch([_body("lost-two@accept.test"), _body("bad-address")])
    assert [r["status"] for r in out["results"]] == [202, 422]
    assert (out["accepted"], out["rejected"]) == (1, 1)
    mid = out["results"][0]["id"]
    assert out["results"][0]["recipients"] == [{"address": "lost-two@accept.test", "status": "queued"}]
    assert len(_rows_for("lost-two@accept.test")) == 1 and len(_swept_next(mid, time.time() + 1)) == 1


def test_a_scheduled_send_whose_hop_is_refused_is_due_at_the_first_sweep_after_send_at(local_stack: Any) -> None:
    send_at = time.time() + 3600
    out, _ = _service(local_stack).send(SendRequest.model_validate(_body("lost-three@accept.test",
                                                                         send_at=iso(send_at))))
    assert out["recipients"] == [{"address": "lost-three@accept.test", "status": "scheduled"}]
    assert _swept_next(out["id"], send_at - 60) == []  # never before its time
    [due] = _swept_next(out["id"], send_at + 1)
    assert due == pytest.approx(send_at - SWEEP_GRACE, abs=1e-3)


def test_a_keyed_send_whose_job_was_refused_is_replayed_as_accepted(local_stack: Any) -> None:
    """The idempotency record stores the accepted answer: the retry gets it, the same id."""
    body = _body("lost-four@accept.test")
    key = f"refused-{uuid.uuid4().hex}"
    first, replayed = _service(local_stack, True).send(SendRequest.model_validate(body), idempotency_key=key, raw=body)
    assert not replayed and first["recipients"][0]["status"] == "queued"
    again, replayed = _service(local_stack, True).send(SendRequest.model_validate(body), idempotency_key=key, raw=body)
    assert replayed and again == first and len(_rows_for("lost-four@accept.test")) == 1


def test_smtp_submission_whose_job_is_refused_answers_250_and_its_retry_the_same_id(local_stack: Any) -> None:
    """Before s17f: 451 4.3.0 (the client retried, after a message.queued event for a message
    taken back). Now 250 with the Outpost id; the DATA retried with the same Message-ID is
    answered from the idempotency record: the same id, one message."""
    host = local_stack.config.ip(1)
    settings = SubmissionSettings(host=host, starttls_port=0, tls_port=0, hostname="smtp.test")
    server = SubmissionServer(settings, sender=_service(local_stack, True), keys=KeyRing(api_keys_table()),
                              tls_context=local_stack.pki.server_context(host))
    key = KeyRing(api_keys_table()).create("smtp refused queue", ["send"], rate=100, burst=100)[0]
    data = (f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: lost-five@accept.test\r\nSubject: x\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@app.example>\r\n\r\nhi\r\n").encode()
    server.start_in_thread()
    try:
        ctx = ssl.create_default_context(cafile=str(local_stack.pki.ca_bundle))
        with smtplib.SMTP_SSL(host, server.ports["tls"], context=ctx, timeout=60) as c:
            c.login("outpost", key)
            replies = []
            for _ in range(2):
                c.mail("app@example.org")
                c.rcpt("lost-five@accept.test")
                replies.append(c.data(data))
    finally:
        server.stop()
    assert replies[0][0] == replies[1][0] == 250 and replies[0][1] == replies[1][1], replies
    [row] = _rows_for("lost-five@accept.test")
    mid = row["pk"]["S"].removeprefix("MSG#")
    assert mid.encode() in replies[0][1] and len(_swept_next(mid, time.time() + 1)) == 1
