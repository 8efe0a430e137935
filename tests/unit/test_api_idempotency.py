"""Idempotency-Key driven by the request (issue 9, item 7), with an in-memory persistence layer.

The layer below is Powertools' own contract (BasePersistenceLayer's four record methods, with
DynamoDB's conditional put as a lock), so `Once` runs exactly as it does against the
IdempotencyTable; tests/integration/test_api_http.py covers the same over HTTP with DynamoDB.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from outpost.api.idempotency import RECORD_NAME, IdempotentRequest, Once
from outpost.errors import ConflictError
from tests.fakes.idempotency import MemoryPersistence


def request(key_id: str, key: str = "order-1", body: object = None) -> IdempotentRequest:
    return IdempotentRequest("send", key_id, key, body if body is not None else {"to": "a@example.org"})


def test_the_same_key_from_two_api_keys_in_flight_at_once_runs_twice_without_colliding():
    once, ran = Once(MemoryPersistence()), []
    both_inside = threading.Barrier(2, timeout=5)

    def work(who: str) -> dict:
        both_inside.wait()  # each run waits for the other: they really overlap
        ran.append(who)
        return {"id": f"message-of-{who}"}

    with ThreadPoolExecutor(2) as pool:
        futures = {who: pool.submit(once.run, request(who), lambda who=who: work(who)) for who in ("k1", "k2")}
        results = {who: f.result(timeout=10) for who, f in futures.items()}
    assert results == {"k1": ({"id": "message-of-k1"}, False), "k2": ({"id": "message-of-k2"}, False)}
    assert sorted(ran) == ["k1", "k2"]
    # Each key's replay answers its own first result, marked as a replay, and runs nothing.
    for who in ("k1", "k2"):
        assert once.run(request(who), lambda: pytest.fail("ran twice")) == ({"id": f"message-of-{who}"}, True)


def test_a_replay_from_the_same_key_is_marked_and_another_body_is_a_conflict():
    store = MemoryPersistence()
    once, calls = Once(store), []

    def work() -> dict:
        calls.append(1)
        return {"id": f"m{len(calls)}"}

    assert once.run(request("k1"), work) == ({"id": "m1"}, False)
    assert once.run(request("k1"), work) == ({"id": "m1"}, True)
    with pytest.raises(ConflictError, match="different request body") as e:
        once.run(request("k1", body={"to": "b@example.org"}), work)
    assert e.value.field == "Idempotency-Key"
    # Another operation with the same key is another request.
    assert once.run(IdempotentRequest("batch", "k1", "order-1", {"to": "a@example.org"}), work) == ({"id": "m2"}, False)
    assert calls == [1, 1]
    # Records keep the name they had when SendService._run made them (a retry across a deploy).
    assert all(k.startswith(f"test-func.{RECORD_NAME}#") for k in store.records)


def test_a_request_still_running_is_a_conflict_not_a_second_run():
    once = Once(MemoryPersistence())
    inside, release = threading.Event(), threading.Event()

    def slow() -> dict:
        inside.set()
        release.wait(5)
        return {"id": "m1"}

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(once.run, request("k1"), slow)
        assert inside.wait(5)
        with pytest.raises(ConflictError, match="still in progress"):
            once.run(request("k1"), lambda: pytest.fail("ran while the first still runs"))
        release.set()
        assert first.result(timeout=10) == ({"id": "m1"}, False)
