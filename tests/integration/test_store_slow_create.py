"""A create slower than UNCOMMITTED_AGE (s16f item 1), against DynamoDB Local with the real send
API service, the real sender and a real MX (sender_rig).

Each PutItem of the create stalls on the rig's clock (what a DynamoDB stall with botocore's
retries does to SMTP submission, which runs outside Lambda). When the META put would land, a
sweeper's job loads the message: past UNCOMMITTED_AGE that load deletes the recipients as a
crashed create's. Committing the META after that would accept a message with no recipients (or
one a retry sends twice); the create must instead take itself back and fail (503 / 451)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest
from sender_rig import FakeClock, Rig

from outpost.api.service import SendService
from outpost.errors import StoreBusyError
from outpost.models import QueueJob, SendRequest
from outpost.store import COMMIT_WITHIN, UNCOMMITTED_AGE, MessageStore
from outpost_local.dynamodb_local import ENGINE_LOCAL

pytestmark = pytest.mark.timeout(120)

TO = ["a@slow.test", "b@slow.test", "c@slow.test"]  # 3 recipient puts, then the META put


class StalledDdb:
    """The rig's client; each PutItem on the table takes `stall` seconds of the rig's clock, and
    `meanwhile(message_id)` runs just before the META put lands."""

    def __init__(self, real: Any, table: str, clock: FakeClock, stall: float,
                 meanwhile: Callable[[str], Any]) -> None:
        self.real, self.table, self.clock, self.stall, self.meanwhile = real, table, clock, stall, meanwhile
        self.puts: list[dict] = []

    def put_item(self, **kw: Any) -> Any:
        if kw.get("TableName") == self.table:
            self.puts.append(kw["Item"])
            self.clock.advance(self.stall)
            if kw["Item"]["sk"]["S"] == "META":
                self.meanwhile(kw["Item"]["pk"]["S"].removeprefix("MSG#"))
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(name="engine")
def engine_fixture(rig: Rig) -> Rig:
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason
    rig.store.clock = rig.clock  # the uncommitted age is measured on the rig's clock
    return rig


def _send(rig: Rig, stall: float) -> tuple[StalledDdb, Callable[[], dict]]:
    ddb = StalledDdb(rig.store.ddb, rig.store.table, rig.clock, stall,
                     meanwhile=rig.store.load)  # a sweeper's job for it, loading the message
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    api = SendService(store=store, suppressions=rig.suppressions, queue=rig.queue, domains=rig.api.domains,
                      clock=rig.clock)
    req = SendRequest.model_validate({"from": "app@sender.test", "to": TO, "subject": "slow", "text": "Hi.\n"})
    return ddb, lambda: api.send_one(req)


def _items(rig: Rig, mid: str) -> list[str]:
    r = rig.store.ddb.query(TableName=rig.store.table, KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": f"MSG#{mid}"}}, ConsistentRead=True)
    return sorted(i["sk"]["S"] for i in r.get("Items", []))


def test_a_create_past_uncommitted_age_fails_whole_instead_of_committing_an_empty_message(engine: Rig) -> None:
    rig = engine
    mx = rig.mx("slow.test", 2)
    queued = len(rig.queue.sent)
    ddb, send = _send(rig, (UNCOMMITTED_AGE + 30) / 3)  # the 3 recipients land 990 s after `now`
    with pytest.raises(StoreBusyError):  # the API's 503, submission's 451 4.3.0
        send()
    mid = str(ddb.puts[0]["pk"]["S"]).removeprefix("MSG#")
    assert [p["sk"]["S"] for p in ddb.puts] == ["RCPT#000", "RCPT#001", "RCPT#002"]  # never the META
    assert _items(rig, mid) == [] and rig.store.load(mid) is None
    assert len(rig.queue.sent) == queued
    rig.run_jobs([QueueJob(message_id=mid)])
    assert mx.received == []


def test_a_create_past_the_deadline_but_short_of_uncommitted_age_also_fails(engine: Rig) -> None:
    """Between COMMIT_WITHIN and UNCOMMITTED_AGE the load leaves the recipients alone, but the
    META put itself may stall past UNCOMMITTED_AGE: the create fails all the same."""
    rig = engine
    ddb, send = _send(rig, (COMMIT_WITHIN + 30) / 3)
    with pytest.raises(StoreBusyError):
        send()
    assert _items(rig, str(ddb.puts[0]["pk"]["S"]).removeprefix("MSG#")) == []


def test_a_slow_create_within_the_deadline_commits_and_is_delivered_whole(engine: Rig) -> None:
    rig = engine
    mx = rig.mx("slow.test", 2)
    _, send = _send(rig, (COMMIT_WITHIN - 30) / 3)
    mid = send()["id"]
    assert _items(rig, mid) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    rig.run_jobs([job for job, _ in rig.queue.sent if job.message_id == mid])
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == sorted(TO)
