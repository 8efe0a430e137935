"""Issue 8, items 10 and 11, on the embedded local stack (moto, the real sender, a real MX).

Item 11: a message stored but never queued (POST /v1/messages/batch timing out between its
writes and its SendMessageBatch) keeps its recipients open with no job. The scheduled sweeper
finds them on the store's due index and queues a job; the recipient is then delivered.
Item 10: the records' TTL never falls before the delivery deadline plus a margin."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.bootstrap import aws, domains_table, job_queue, message_store, suppression_store
from outpost.errors import InvalidRequestError
from outpost.models import RecipientState, SendRequest
from outpost.records import Message, Recipient, Upload
from outpost.store import TTL_MARGIN, JobQueue, MessageStore, rcpt_sk
from outpost.stored_request import StoredRequest
from outpost.sweeper import SWEEP_GRACE, Sweeper
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(120)

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _store_without_queueing(to: str, *, clock: float | None = None, **extra: object) -> str:
    """What a batch item is between its write and its enqueue: stored, no job."""
    at = clock if clock is not None else time.time()
    svc = SendService(store=message_store(), suppressions=suppression_store(), queue=job_queue(),
                      domains=domains_table(), clock=lambda: at)
    req = SendRequest.model_validate({"from": f"shop@{SENDING_DOMAIN}", "to": to, "subject": "swept",
                                      "text": "hello", **extra})
    return str(svc.send_one(req, enqueue=False)["id"])


def _item(mid: str, sk: str) -> dict:
    r = aws("dynamodb").get_item(TableName=message_store().table,
                                 Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": sk}}, ConsistentRead=True)
    return r["Item"]


def _state(mid: str) -> str:
    return str(_item(mid, rcpt_sk(0))["state"]["S"])


@pytest.fixture
def no_background_sweeps(local_stack):
    """The session stack runs the sweeper on its own every 60 s (StackConfig.schedule_interval).
    A run inside the next test's window (its 3 s wait plus the writes around it: about one
    session in 15) would rescue the overdue message that the test must find untouched before its
    own sweep, so that test failed by chance. The timer is stopped for the test and a fresh one
    started after it, for the tests that follow."""
    from outpost_local.poller import Scheduler

    timer = local_stack.schedulers["SweeperFunction"]
    timer.stop()
    try:
        yield
    finally:
        fresh = Scheduler(timer.function, timer.rule_arn, timer.interval)
        fresh.start()
        local_stack.schedulers["SweeperFunction"] = fresh
        local_stack.components[local_stack.components.index(timer)] = fresh


def test_a_stored_but_unqueued_message_is_delivered_after_a_scheduled_sweep(local_stack, no_background_sweeps):
    # Stored long enough ago that its job is overdue by more than the grace period.
    mid = _store_without_queueing("swept-1@accept.test", clock=time.time() - SWEEP_GRACE - 120)
    time.sleep(3)
    assert _state(mid) == "queued"  # nobody is going to move it: there is no job
    assert any(o.message_id == mid for o in message_store().overdue(time.time() - SWEEP_GRACE))

    event = json.loads((EVENTS / "schedule.json").read_text())
    retry_poller = local_stack.pollers["SenderFunction.Retry"]
    retries_before = retry_poller.invocations
    report = local_stack.functions["SweeperFunction"].invoke(event)  # the deployed handler
    # The overdue sweep's report, and the reputation breaker's periodic evaluation's (issue 11).
    assert set(report) == {"overdue", "messages", "failed", "reputation_scopes", "reputation_moved",
                           "reputation_failed"} and report["failed"] == 0 == report["reputation_failed"]

    deadline = time.time() + 60
    while _state(mid) in ("queued", "deferred") and time.time() < deadline:
        time.sleep(0.5)
    assert _state(mid) == "delivered"
    assert retry_poller.invocations > retries_before  # a rescue goes with the retries
    server = local_stack.mx["accept.test"].server
    assert [r for r in server.received if f"<{mid}@" in r.data.decode("ascii", "replace")]
    item = _item(mid, rcpt_sk(0))
    assert "due_at" not in item and "due_shard" not in item  # final: out of the due index


def test_the_sweeper_queues_one_job_per_overdue_message_and_leaves_the_rest(local_stack):
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=f"sweeper-probe-{int(time.time() * 1000)}")["QueueUrl"]
    now = time.time()
    overdue = _store_without_queueing("swept-2@accept.test", cc=["swept-3@accept.test"])
    fresh = _store_without_queueing("swept-4@accept.test")
    crashed = _store_without_queueing("swept-5@accept.test")  # leased, then the invocation died
    leased = _store_without_queueing("swept-6@accept.test")  # leased by a run still going
    # The probe's clock runs ahead, so the stack's own background sweeps (real time) do not
    # touch these messages, and `fresh` is made fresh by postponing it to the probe's now.
    later = now + SWEEP_GRACE + 300
    assert message_store().postpone_due(fresh, 0, float(_item(fresh, rcpt_sk(0))["due_at"]["N"]), later)
    assert message_store().claim(crashed, 0, now, 60)  # lease over at now + 60: overdue later
    assert message_store().claim(leased, 0, now, SWEEP_GRACE + 600)  # still leased at `later`
    sweeper = Sweeper(store=message_store(), queue=JobQueue(sqs, url), clock=lambda: later)
    ours = (overdue, fresh, crashed, leased)

    def drain() -> list[str]:
        got: list[str] = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           VisibilityTimeout=300).get("Messages", []):
            got += [json.loads(m["Body"])["message_id"] for m in batch]
        return got

    first = sweeper.sweep()
    mine = sorted(m for m in drain() if m in ours)
    assert mine == sorted([overdue, crashed])  # one job per message, not per recipient
    assert first.failed == 0 and first.overdue >= 3

    second = sweeper.sweep()  # within the grace period of the first: nothing queued again
    assert not [m for m in drain() if m in ours]
    assert second.failed == 0


def test_records_outlive_the_delivery_deadline_whatever_the_retention(local_stack):
    store = MessageStore(aws("dynamodb"), message_store().table, aws("s3"), message_store().bucket,
                         retention_days=1)
    now = time.time()
    deliver_until = now + 14 * 86400
    mid = f"ttl{int(now * 1000)}"
    store.create(Message(message_id=mid, from_=f"shop@{SENDING_DOMAIN}", subject="ttl",
                         deliver_until=deliver_until, recipient_count=1),
                 [Recipient(mid, 0, "ttl@accept.test", RecipientState.QUEUED)],
                 StoredRequest.model_validate({"from": f"shop@{SENDING_DOMAIN}"}), now)
    for sk in ("META", rcpt_sk(0)):
        assert int(_item(mid, sk)["expires_at"]["N"]) >= deliver_until + TTL_MARGIN
    # A long retention still wins over a short lifetime.
    long_retention = MessageStore(None, "t", None, "b", retention_days=30)
    assert long_retention.expires_for(now, now + 60) == math.ceil(now + 30 * 86400)


def test_an_upload_the_lifecycle_deletes_before_the_deadline_is_refused(local_stack):
    # uploads/ expire RetentionDays after they were PUT; a message that may still be retried
    # after that would find its attachment gone. Real S3 (moto) LastModified, a clock 20 days on.
    upload_id = f"{int(time.time() * 1000):032d}"
    aws("s3").put_object(Bucket=message_store().bucket, Key=f"uploads/{upload_id}", Body=b"PK\x03\x04")
    # as POST /v1/uploads does
    message_store().put_upload(Upload(upload_id, "k-lifecycle", 4, "application/zip"), time.time())
    owner = Principal(key_id="k-lifecycle", name="test", scopes=frozenset({"send"}))
    later = time.time() + 20 * 86400
    svc = SendService(store=message_store(), suppressions=suppression_store(), queue=job_queue(),
                      domains=domains_table(), clock=lambda: later, retention_days=30)
    base = {"from": f"shop@{SENDING_DOMAIN}", "to": "late-upload@accept.test", "subject": "x", "text": "y",
            "attachments": [{"filename": "a.zip", "upload_id": upload_id}]}
    with pytest.raises(InvalidRequestError, match="deleted before this message's delivery deadline") as err:
        svc.send_one(SendRequest.model_validate(dict(base, expires_in=14 * 86400)), enqueue=False, principal=owner)
    assert err.value.field == "attachments[0].upload_id"
    # Kept 30 days, 20 gone: a message due within the remaining 10 (minus the margin) is fine.
    ok = svc.send_one(SendRequest.model_validate(dict(base, expires_in=3 * 86400)), enqueue=False, principal=owner)
    assert ok["recipients"][0]["status"] == "queued"
