"""Issue 8, item 14: UnprocessedItems / UnprocessedKeys are retried with exponential backoff and
jitter, a capped number of times, then the store raises; never in a tight loop.

The fake client is DynamoDB's batch API shape: it answers part of every request as
unprocessed for the first `busy_rounds` calls (what a throttled table does)."""

from __future__ import annotations

import pytest

from outpost.errors import StoreBusyError
from outpost.store import (
    BATCH_ATTEMPTS,
    BATCH_BACKOFF_BASE,
    BATCH_BACKOFF_CAP,
    MessageStore,
    SuppressionStore,
    batch_backoff,
    rcpt_sk,
    retry_unprocessed,
)


class _Exceptions:
    class ConditionalCheckFailedException(Exception):
        pass


class BusyDynamo:
    """BatchWriteItem / BatchGetItem that process one item per call while busy, then all."""

    exceptions = _Exceptions

    def __init__(self, busy_rounds: int, *, hard_limit: int = 1000) -> None:
        self.busy_rounds, self.hard_limit = busy_rounds, hard_limit
        self.calls = 0
        self.deleted: list[dict] = []
        self.stored = {"a@x.test", "c@x.test"}

    def _count(self) -> bool:
        self.calls += 1
        if self.calls > self.hard_limit:  # the old tight loop never stops on its own
            raise RuntimeError("retried without bound")
        return self.calls <= self.busy_rounds

    def batch_write_item(self, RequestItems: dict) -> dict:  # noqa: N803 - boto3's names
        busy = self._count()
        (table, reqs), = RequestItems.items()
        if busy and len(reqs) > 1:
            self.deleted.append(reqs[0])
            return {"UnprocessedItems": {table: reqs[1:]}}
        self.deleted.extend(reqs)
        return {"UnprocessedItems": {}}

    def batch_get_item(self, RequestItems: dict) -> dict:  # noqa: N803
        busy = self._count()
        (table, req), = RequestItems.items()
        keys = req["Keys"]
        done, rest = (keys[:1], keys[1:]) if busy and len(keys) > 1 else (keys, [])
        found = [k for k in done if k["address"]["S"] in self.stored]
        return {"Responses": {table: found},
                "UnprocessedKeys": {table: dict(req, Keys=rest)} if rest else {}}


def test_backoff_is_exponential_capped_and_jittered() -> None:
    top = [batch_backoff(n, rng=lambda: 1.0) for n in range(1, 12)]
    assert top[:4] == [BATCH_BACKOFF_BASE, 2 * BATCH_BACKOFF_BASE, 4 * BATCH_BACKOFF_BASE, 8 * BATCH_BACKOFF_BASE]
    assert max(top) == BATCH_BACKOFF_CAP and top == sorted(top)
    assert batch_backoff(5, rng=lambda: 0.25) == 0.25 * top[4]  # full jitter: uniform in [0, top]


def test_unprocessed_deletes_back_off_then_complete() -> None:
    ddb = BusyDynamo(busy_rounds=4)
    sleeps: list[float] = []
    store = MessageStore(ddb, "t", None, "b", sleep=sleeps.append)
    store._take_back("m1", [rcpt_sk(i) for i in range(10)])  # a failed create's items: one request
    assert len(ddb.deleted) == 10
    assert ddb.calls == 5
    assert len(sleeps) == 4 and all(s >= 0 for s in sleeps)
    assert sum(sleeps) > 0  # it waited between rounds


def test_unprocessed_deletes_give_up_after_the_cap() -> None:
    ddb = BusyDynamo(busy_rounds=10_000)
    sleeps: list[float] = []
    store = MessageStore(ddb, "t", None, "b", sleep=sleeps.append)
    with pytest.raises(StoreBusyError, match="unprocessed"):
        retry_unprocessed(lambda rq: ddb.batch_write_item(RequestItems=rq),
                          {"t": [{"DeleteRequest": {"Key": {"n": {"N": str(i)}}}} for i in range(21)]},
                          "UnprocessedItems", sleep=sleeps.append)
    assert ddb.calls == BATCH_ATTEMPTS
    assert len(sleeps) == BATCH_ATTEMPTS - 1
    # a failed create's take-back gives up the same way, without raising (the create's error is
    # what its caller sees; what stays has no META and `load` deletes it later)
    ddb.calls, ddb.deleted = 0, []
    store._take_back("m1", [rcpt_sk(i) for i in range(20)])
    assert ddb.calls == len(ddb.deleted) == BATCH_ATTEMPTS  # one item a busy call, then it gave up


def test_unprocessed_keys_back_off_and_keep_every_answer() -> None:
    ddb = BusyDynamo(busy_rounds=3)
    sleeps: list[float] = []
    found = SuppressionStore(ddb, "s", sleep=sleeps.append).suppressed(
        ["a@x.test", "b@x.test", "c@x.test", "d@x.test"])
    assert found == {"a@x.test", "c@x.test"}  # answers of every round are kept
    assert ddb.calls == 4 and len(sleeps) == 3


def test_unprocessed_keys_give_up_after_the_cap() -> None:
    ddb = BusyDynamo(busy_rounds=10_000)
    sleeps: list[float] = []
    with pytest.raises(StoreBusyError):
        SuppressionStore(ddb, "s", sleep=sleeps.append).suppressed([f"u{i}@x.test" for i in range(50)])
    assert ddb.calls == BATCH_ATTEMPTS and len(sleeps) == BATCH_ATTEMPTS - 1
