"""An attacker's pass over the store's durability (s16e): crash and failure points after the
create (the take-back of a message that could not be queued), against DynamoDB Local with the
real send API service, the real sender, the sweeper and a real MX (sender_rig).

The promise checked: whatever the API answers is true. A 202 means every recipient reaches a
final state and the MX receives the message exactly once (the sweeper's job sends it when the
API's job was never queued); a 503 means nothing is ever sent, so the client's retry is the
only copy."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from sender_rig import Rig

from outpost.api.service import QueryService, SendService
from outpost.errors import NotFoundError
from outpost.models import QueueJob, SendRequest
from outpost.store import UNCOMMITTED_AGE, MessageStore
from outpost.sweeper import SWEEP_GRACE, Sweeper
from outpost_local.dynamodb_local import ENGINE_LOCAL

pytestmark = pytest.mark.timeout(180)


class RefusingQueue:
    """SQS refusing the API's job (the enqueue after the create fails)."""

    def send(self, job: QueueJob, delay: float = 0) -> None:
        raise RuntimeError("SQS is unavailable")

    def send_many(self, jobs: list[QueueJob]) -> list[str]:
        raise RuntimeError("SQS is unavailable")


class PartialDeletes:
    """The rig's DynamoDB client; its deletes of the table's items fail part way: `keep`
    names the sort keys DynamoDB never processes (left in UnprocessedItems, as under
    throttling), and `fail_call` the BatchWriteItem call (1-based) that raises instead."""

    def __init__(self, real: Any, table: str, *, keep: tuple[str, ...] = (), fail_call: int = 0) -> None:
        self.real, self.table, self.keep = real, table, keep
        self.fail_call, self.calls = fail_call, 0

    def batch_write_item(self, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_call:
            raise RuntimeError("connection reset")
        reqs = kw["RequestItems"].get(self.table, [])
        kept = [r for r in reqs if "DeleteRequest" in r and r["DeleteRequest"]["Key"]["sk"]["S"] in self.keep]
        done = [r for r in reqs if r not in kept]
        if done:
            self.real.batch_write_item(RequestItems={self.table: done})
        return {"UnprocessedItems": {self.table: kept} if kept else {}}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(name="engine")
def engine_fixture(rig: Rig) -> Rig:
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason
    rig.store.clock = rig.clock  # the uncommitted age is measured on the rig's clock
    return rig


def _api(rig: Rig, ddb: Any) -> SendService:
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock,
                         sleep=lambda s: None)
    return SendService(store=store, suppressions=rig.suppressions, queue=RefusingQueue(),  # type: ignore[arg-type]
                       domains=rig.api.domains, clock=rig.clock)


def _request(to: list[str]) -> SendRequest:
    return SendRequest.model_validate({"from": "App <app@sender.test>", "to": to, "subject": "take back",
                                       "text": "Hello.\n"})


def _sweep_and_deliver(rig: Rig, rounds: int = 2) -> None:
    """What runs after the API answered: the sweeper past its grace (twice, as after
    UNCOMMITTED_AGE), each job it queues run by the real sender."""
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock)
    for _ in range(rounds):
        rig.clock.advance(max(SWEEP_GRACE, UNCOMMITTED_AGE) + 1)
        before = len(rig.queue.sent)
        sweeper.sweep()
        jobs = [job for job, _ in rig.queue.sent[before:]]
        if jobs:
            rig.run_jobs(jobs)


def _answer(api: SendService, to: list[str]) -> tuple[int, str | None]:
    try:
        return 202, str(api.send_one(_request(to))["id"])
    except Exception:  # noqa: BLE001 - the route answers any other failure 503
        return 503, None


def _mids(rig: Rig, to: list[str]) -> set[str]:
    return {r.message_id for a in to for r in rig.store.messages_to(a).items}


def _check_the_answer_holds(rig: Rig, status: int, mid: str | None, to: list[str], got: list[str]) -> None:
    if status == 202:
        assert mid is not None
        assert sorted(got) == sorted(to)  # every recipient, exactly once
        view = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock).message(mid)
        assert {r["state"] for r in view["recipients"]} == {"delivered"}
    else:
        assert got == []  # not accepted: never sent (the client's retry is the only copy)
        assert _mids(rig, to) == set()  # and nothing is left in the lists


@pytest.mark.parametrize("case", ["second-batch-raises", "recipients-unprocessed"])
def test_a_take_back_that_fails_part_way_answers_what_happens(engine: Rig, case: str) -> None:
    """The enqueue fails, so the API takes the message back (store.discard); that fails part
    way. Before s16e the META item went in the first delete batch: with it gone and some
    recipients left, the API answered 202 (take-back failed: kept for the sweeper), yet no job
    could ever load the message: an accepted message never sent, 404 for its id."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    if case == "second-batch-raises":  # more than one delete batch of 25
        to = [f"r{i}@crash.test" for i in range(30)]
        ddb = PartialDeletes(rig.store.ddb, rig.store.table, fail_call=2)
    else:
        to = [f"u{i}@crash.test" for i in range(3)]
        ddb = PartialDeletes(rig.store.ddb, rig.store.table, keep=("RCPT#001", "RCPT#002"))
    status, mid = _answer(_api(rig, ddb), to)
    _sweep_and_deliver(rig)
    _check_the_answer_holds(rig, status, mid, to, [a for r in mx.received for a in r.rcpt_tos])


def test_a_take_back_that_cannot_delete_the_meta_is_accepted_and_sent_once(engine: Rig) -> None:
    """The take-back fails before anything is deleted: still committed, answered 202, and the
    sweeper's job delivers it once."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    to = [f"k{i}@crash.test" for i in range(3)]
    ddb = PartialDeletes(rig.store.ddb, rig.store.table, fail_call=1)
    status, mid = _answer(_api(rig, ddb), to)
    assert status == 202
    _sweep_and_deliver(rig)
    _check_the_answer_holds(rig, status, mid, to, [a for r in mx.received for a in r.rcpt_tos])


def test_a_take_back_that_deletes_the_meta_is_a_503_and_its_recipients_go(engine: Rig) -> None:
    """Recipients left behind by a take-back whose META delete succeeded: uncommitted, never
    sent, 404 for the id, deleted by `load` after UNCOMMITTED_AGE."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    to = [f"m{i}@crash.test" for i in range(3)]
    ddb = PartialDeletes(rig.store.ddb, rig.store.table, keep=("RCPT#000", "RCPT#001", "RCPT#002"))
    status, mid = _answer(_api(rig, ddb), to)
    assert status == 503 and mid is None
    left = _mids(rig, to)
    assert len(left) == 1  # listed (as queued) until cleaned up: the documented window
    with pytest.raises(NotFoundError):
        QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock).message(left.pop())
    _sweep_and_deliver(rig)
    _check_the_answer_holds(rig, status, mid, to, [a for r in mx.received for a in r.rcpt_tos])
