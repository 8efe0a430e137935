"""The Idempotency-Key's claim (ONCE#, store.MessageStore._claim_key) under real concurrency, and
the answer a retry gets through it (r17), against DynamoDB Local (sender_rig): its conditional
writes are atomic, as DynamoDB's are, so threads with their own clients race for real.

- Creates with one key at once: exactly one message is committed; every other create is told
  the key is in progress (409 / 451) or finds that message.
- A claim whose creator died (its busy_until past): of the retries racing to take it over,
  exactly one does.
- A retry that gets past the idempotency record (the first run's record lost: killed after its
  commit and expired) is answered exactly what the first run answered: the same id, each
  recipient's address and status (suppressed at acceptance, scheduled), marked replayed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sender_rig import T0, Rig

from outpost.api.service import SendService
from outpost.clock import iso
from outpost.errors import InProgressError
from outpost.ids import new_message_id
from outpost.models import SendRequest
from outpost.records import CreateKey, EarlierCreate, Message, Recipient, RecipientState, Suppression
from outpost.store import MessageStore
from outpost.stored_request import StoredRequest

pytestmark = pytest.mark.timeout(180)

THREADS = 8


def _create(store: MessageStore, once: CreateKey, now: float) -> tuple[str, Any]:
    """One create of a one-recipient message with `once`: (its id, what it returned or raised)."""
    mid = new_message_id()
    meta = Message(message_id=mid, from_="app@sender.test", from_domain="sender.test", subject="race",
                   tags={}, tls="opportunistic", deliver_until=now + 3600, recipient_count=1, size=10)
    rcpt = Recipient(message_id=mid, index=0, address="a@race.test", state=RecipientState.QUEUED)
    req = StoredRequest.from_request(SendRequest.model_validate(
        {"from": "app@sender.test", "to": ["a@race.test"], "subject": "race", "text": "Hi.\n"}))
    try:
        return mid, store.create(meta, [rcpt], req, now, once)
    except InProgressError as exc:
        return mid, exc


def _race(rig: Rig, once: CreateKey, now: float) -> list[tuple[str, Any]]:
    """THREADS creates with `once` released together, each on its own client."""
    stores = [MessageStore(rig.aws.client("dynamodb"), rig.store.table, rig.store.s3, rig.store.bucket,
                           clock=rig.clock) for _ in range(THREADS)]
    barrier, out, lock = threading.Barrier(THREADS), [], threading.Lock()

    def run(store: MessageStore) -> None:
        barrier.wait(30)
        got = _create(store, once, now)
        with lock:
            out.append(got)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == THREADS
    return out


def _committed(rig: Rig, ids: list[str]) -> list[str]:
    return [m for m in ids if rig.store.load(m) is not None]


@pytest.mark.parametrize("round_", range(3))
def test_creates_with_one_key_at_once_commit_exactly_one_message(engine: Rig, round_: int) -> None:
    rig = engine
    once = CreateKey(f"race-{time.time_ns()}", "d1")
    out = _race(rig, once, rig.clock())
    [winner] = [m for m, got in out if got is None]
    assert _committed(rig, [m for m, _ in out]) == [winner]
    for mid, got in out:
        assert got is None or isinstance(got, InProgressError) or got == EarlierCreate(winner, "d1"), (mid, got)


def test_a_dead_creators_claim_is_taken_over_by_exactly_one_retry(engine: Rig) -> None:
    """The first create claimed the key (busy 1 s) and died before its META; 2 s later THREADS
    retries race for the claim: one takes it over and commits, the others find it in progress
    or committed."""
    rig = engine
    once = CreateKey(f"dead-{time.time_ns()}", "d1", busy=1)
    now = rig.clock()
    key = {"pk": {"S": f"ONCE#{once.key}"}, "sk": {"S": "META"}}
    item = {**key, "message_id": {"S": new_message_id()}, "digest": {"S": "d1"},
            "hold_until": {"N": str(now + once.ttl)}, "busy_until": {"N": str(now + 1)}}
    rig.store.ddb.put_item(TableName=rig.store.table, Item=item)  # the dead creator's claim
    out = _race(rig, once, now + 2)
    [winner] = [m for m, got in out if got is None]
    assert _committed(rig, [m for m, _ in out]) == [winner]
    held = rig.store.ddb.get_item(TableName=rig.store.table, Key=key, ConsistentRead=True)["Item"]
    assert held["message_id"]["S"] == winner


def _keyed_api(rig: Rig) -> SendService:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    persistence = DynamoDBPersistenceLayer(table_name=rig.aws.env["OUTPOST_IDEMPOTENCY_TABLE"],
                                           boto3_client=rig.aws.client("dynamodb"))
    return SendService(store=rig.store, suppressions=rig.suppressions, queue=rig.queue, domains=rig.api.domains,
                       clock=rig.clock, idempotency=persistence)


def _forget_records(rig: Rig) -> None:
    """Every idempotency record gone: as a first run killed after its commit leaves its record,
    once that record's in-progress mark is over (Powertools then runs the retry)."""
    ddb, table = rig.store.ddb, rig.aws.env["OUTPOST_IDEMPOTENCY_TABLE"]
    for it in ddb.scan(TableName=table, ConsistentRead=True).get("Items", []):
        ddb.delete_item(TableName=table, Key={"id": it["id"]})


def test_a_retry_past_the_idempotency_record_is_answered_what_the_first_run_answered(engine: Rig) -> None:
    rig = engine
    rig.suppressions.add(Suppression.new("gone@race.test", rig.clock(), source="manual", reason="test", kind=None))
    api = _keyed_api(rig)
    body = {"from": "app@sender.test", "to": ["a@race.test", "gone@race.test", "b@race.test"],
            "subject": "once", "text": "Hi.\n", "send_at": iso(T0 + 7200)}
    key = f"replay-{time.time_ns()}"
    first, replayed = api.send(SendRequest.model_validate(body), idempotency_key=key, raw=body)
    assert not replayed and [r["status"] for r in first["recipients"]] == ["scheduled", "suppressed", "scheduled"]
    _forget_records(rig)
    again, replayed = api.send(SendRequest.model_validate(body), idempotency_key=key, raw=body)
    assert replayed and again == first
    # The batch: each message's answer the same (same ids); the batch's answer whole.
    batch = [dict(body, subject=f"b{i}") for i in range(3)]
    out, _ = api.send_batch(batch, idempotency_key=key)
    _forget_records(rig)
    out2, _ = api.send_batch(batch, idempotency_key=key)  # (not marked replayed: only a single send is)
    assert out2 == out and out["accepted"] == 3
