"""The create's puts when DynamoDB's answer is lost (r17), against DynamoDB Local with the real
send API service, the real sender and a real MX over verified TLS (sender_rig).

bootstrap's clients retry (botocore standard mode, 4 attempts) a call that timed out reading
its answer (read_timeout 10 s). A conditional PutItem that DynamoDB applied but whose answer
was lost is sent again, and that second try fails its own condition: the
ConditionalCheckFailedException reports the caller's own write. Every put of a create is new
(the message id has 80 random bits, ids.py), so the item found is its own:
- the META put: the create took back its recipients and raised, leaving a committed META with
  no recipients; the client's retry with the same Idempotency-Key then found that message and
  was answered 202 "replayed" with no recipients, and nothing was ever sent;
- the key's claim (ONCE#): the create found its own claim "still in progress" and answered
  409 / 451 until the claim's deadline (960 s for SMTP submission).
LostReply plays the lost answer exactly: the real put, then the same put again, whose real
ConditionalCheckFailedException from DynamoDB Local is what the caller sees."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sender_rig import Rig

from outpost.api.service import SendService
from outpost.models import QueueJob, SendRequest
from outpost.records import CreateKey
from outpost.store import MessageStore

pytestmark = pytest.mark.timeout(120)

TO = ["a@lost.test", "b@lost.test", "c@lost.test"]


class LostReply:
    """The rig's client; the first PutItem whose sort key is `sk` is applied, then sent again (a
    retry after its answer was lost), and the second try's answer is the caller's."""

    def __init__(self, real: Any, table: str, sk: str) -> None:
        self.real, self.table, self.sk, self.replayed = real, table, sk, 0

    def put_item(self, **kw: Any) -> Any:
        if kw.get("TableName") == self.table and kw["Item"]["sk"]["S"] == self.sk and not self.replayed:
            self.replayed += 1
            self.real.put_item(**kw)  # applied; its answer never arrives
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _items(rig: Rig, mid: str) -> list[str]:
    r = rig.store.ddb.query(TableName=rig.store.table, KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": f"MSG#{mid}"}}, ConsistentRead=True)
    return sorted(i["sk"]["S"] for i in r.get("Items", []))


def _api(rig: Rig, store: MessageStore) -> SendService:
    return SendService(store=store, suppressions=rig.suppressions, queue=rig.queue, domains=rig.api.domains,
                       clock=rig.clock)


def _request(subject: str) -> SendRequest:
    return SendRequest.model_validate({"from": "app@sender.test", "to": TO, "subject": subject, "text": "Hi.\n"})


def _delivered(rig: Rig, mid: str, mx: Any) -> None:
    rig.run_jobs([QueueJob(message_id=mid)])
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == sorted(TO)  # each once
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 3


@pytest.mark.parametrize("sk", ["RCPT#001", "META"])
def test_a_put_whose_answer_was_lost_is_the_creates_own(engine: Rig, sk: str) -> None:
    """The META's (the commit) or a recipient's put applied, its answer lost, its retry refused by
    its own condition: the create goes on, the message is whole and accepted, and the real MX
    receives each recipient once. Before: the META case raised (a 503) after deleting the
    recipients it had written, leaving a META with none."""
    rig = engine
    mx = rig.mx("lost.test", 2)
    ddb = LostReply(rig.store.ddb, rig.store.table, sk)
    out = _api(rig, MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
               ).send_one(_request(f"lost {sk}"))
    assert ddb.replayed == 1
    mid = str(out["id"])
    assert [r["status"] for r in out["recipients"]] == ["queued"] * 3
    assert _items(rig, mid) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    _delivered(rig, mid, mx)


def test_a_claim_put_whose_answer_was_lost_is_the_creates_own(engine: Rig) -> None:
    """The key's claim applied, its answer lost, its retry refused: the claim found is this
    create's own, so it goes on (before: InProgressError, a 409 / 451 4.3.0 until the claim's
    deadline, 960 s for SMTP submission); a later create with the key finds that message."""
    rig = engine
    mx = rig.mx("lost.test", 2)
    once = CreateKey(f"lost-{time.time_ns()}", "d1")  # as SMTP submission's: no deadline
    ddb = LostReply(rig.store.ddb, rig.store.table, "META")  # the claim is the create's first put
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    out = _api(rig, store).send_one(_request("lost claim"), once=once)
    assert ddb.replayed == 1
    mid = str(out["id"])
    assert _items(rig, mid) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    again = _api(rig, rig.store).create_one(_request("lost claim"), once=once)
    assert again.replayed and again.answer == {"id": mid, "recipients": out["recipients"]}
    _delivered(rig, mid, mx)
