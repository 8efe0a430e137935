"""A create keyed by its Idempotency-Key (store.MessageStore.create's `once`): a retry that the
idempotency layer lets through (the first run's record is gone: killed past its commit, with the
in-progress mark expired) finds the message the first run committed, in the fake store.
tests/integration/test_store_create_crash.py plays the crash itself on DynamoDB Local."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.api.idempotency import Once
from outpost.errors import ConflictError
from outpost.models import BatchResult, SendResponse
from tests.fakes.idempotency import MemoryPersistence
from tests.unit.test_services_with_fakes import KEY, SENDER, World
from tests.unit.test_submission_rules import KEY as SMTP_KEY
from tests.unit.test_submission_rules import MSG
from tests.unit.test_submission_rules import World as SmtpWorld


def _batch(*to: str) -> list[dict]:
    return [{"from": f"news@{SENDER}", "to": a, "subject": "Hi", "text": "Hi."} for a in to]


def test_a_batch_retried_past_its_lost_record_answers_the_first_ids_and_makes_no_copy() -> None:
    w = World(idempotent=True)
    first, _ = w.api.send_batch(_batch("a@ok.test", "b@ok.test"), principal=KEY, idempotency_key="b1")
    w.api._once = Once(MemoryPersistence())  # the idempotency record is gone (in-progress mark expired)
    again, replayed = w.api.send_batch(_batch("a@ok.test", "b@ok.test"), principal=KEY, idempotency_key="b1")
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    # s17f: every item found through its claim, so the batch is a replay (Idempotent-Replayed)
    assert again["results"] == first["results"] and replayed
    assert sorted(w.store.messages) == sorted(r["id"] for r in first["results"])  # no second copy
    # Another API key's same Idempotency-Key is another request: new messages.
    other = KEY.__class__(key_id="k2", name="other", scopes=KEY.scopes, domains=None)
    third, _ = w.api.send_batch(_batch("a@ok.test", "b@ok.test"), principal=other, idempotency_key="b1")
    assert not {r["id"] for r in third["results"]} & set(r["id"] for r in first["results"])


def test_a_batch_is_a_replay_only_when_it_created_no_message() -> None:
    """s17f: Idempotent-Replayed on a batch means this request created no message: each accepted
    item was found through its claim (refused items, answered as they are now, do not count);
    one new message among them, or none replayed, and the header is absent."""
    w = World(idempotent=True)
    invalid = {"from": f"news@{SENDER}", "to": "not an address", "subject": "Hi", "text": "Hi."}
    first, _ = w.api.send_batch([*_batch("a@ok.test"), invalid], principal=KEY, idempotency_key="m1")
    assert [r["status"] for r in first["results"]] == [202, 422]
    w.api._once = Once(MemoryPersistence())  # the idempotency records are gone
    again, replayed = w.api.send_batch([*_batch("a@ok.test"), invalid], principal=KEY, idempotency_key="m1")
    assert again["results"] == first["results"] and replayed  # the 422 is refused again; nothing new
    w.api._once = Once(MemoryPersistence())
    w.store.claims.pop(next(iter(w.store.claims)))  # item 0's claim gone: a new message now
    mixed, replayed = w.api.send_batch([*_batch("a@ok.test"), invalid], principal=KEY, idempotency_key="m1")
    assert mixed["results"][0]["id"] != first["results"][0]["id"] and not replayed
    none, replayed = w.api.send_batch([invalid], principal=KEY, idempotency_key="m2")
    assert none["accepted"] == 0 and not replayed


def test_a_single_send_retried_past_its_lost_record_is_a_replay_and_another_body_a_409() -> None:
    w = World(idempotent=True)
    out, _ = w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="s1")
    w.api._once = Once(MemoryPersistence())
    assert w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="s1") == (out, True)
    w.api._once = Once(MemoryPersistence())
    with pytest.raises(ConflictError):
        w.api.send(w.request("b@ok.test"), principal=KEY, idempotency_key="s1")
    # Past the key's 24 h the key means a new request, as with the idempotency record.
    w.api._once = Once(MemoryPersistence())
    w.clock.advance(86400 + 1)
    fresh, replayed = w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="s1")
    assert fresh["id"] != out["id"] and not replayed


def test_an_answer_found_through_the_creates_key_has_exactly_the_documented_keys() -> None:
    """s17b: a replay found through the create's claim (SendService._earlier) is marked beside
    its answer (api.service.Created), not by a private key in it: the answer, the idempotency
    record that stores it, and that record's replay carry only what SendResponse and BatchResult
    document (before, the single send's record stored a `_replayed` key)."""
    single, item = set(SendResponse.model_fields), {"index", "status", "id", "recipients"}
    assert item <= set(BatchResult.model_fields)
    w = World(idempotent=True)
    out, _ = w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="k1")
    batch, _ = w.api.send_batch(_batch("b@ok.test", "c@ok.test"), principal=KEY, idempotency_key="k2")
    fresh = MemoryPersistence()
    w.api._once = Once(fresh)  # both records gone: the retries find the messages through their claims
    again, replayed = w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="k1")
    assert replayed and again == out and set(again) == single
    b_again, _ = w.api.send_batch(_batch("b@ok.test", "c@ok.test"), principal=KEY, idempotency_key="k2")
    assert b_again == batch and set(b_again) == {"accepted", "rejected", "results"}
    assert [set(r) for r in b_again["results"]] == [item, item]
    stored = [json.loads(r.response_data) for r in fresh.records.values()]
    assert sorted(map(set, stored), key=len) == [single, {"accepted", "rejected", "results"}]
    assert [set(r) for d in stored if "results" in d for r in d["results"]] == [item, item]
    thrice = w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="k1")  # from the record
    assert thrice == (out, True) and set(thrice[0]) == single


def test_a_record_stored_before_the_typed_result_is_replayed_without_its_private_key() -> None:
    """Records written before s17b (the idempotency layer keeps them 24 h) hold `_replayed`:
    the replay answers without it."""
    from outpost.api.idempotency import IdempotentRequest

    w = World(idempotent=True)
    req = w.request("a@ok.test")
    legacy = {"id": "01kx0000000000000000000000", "_replayed": True,
              "recipients": [{"address": "a@ok.test", "status": "queued"}]}
    assert w.persistence is not None
    key = IdempotentRequest("send", KEY.key_id, "old1", req.model_dump(mode="json", by_alias=True))
    Once(w.persistence).run(key, lambda: legacy)
    out, replayed = w.api.send(req, principal=KEY, idempotency_key="old1")
    assert replayed and out == {k: v for k, v in legacy.items() if k != "_replayed"}


def test_an_smtp_data_retried_past_its_lost_record_is_the_first_message() -> None:
    """SMTP submission's key (Message-ID and envelope recipients) claims its create too."""
    w = SmtpWorld()
    data = b"Message-ID: <m1@app>\r\n" + MSG
    first = w.send(data)
    w.api._once = Once(MemoryPersistence())  # the task died past the commit; its record expired
    out, replayed = w.api.send_raw(data, rcpts=["a@ok.test"], principal=SMTP_KEY)
    assert out["id"] == first and replayed and list(w.store.messages) == [first]
    w.api._once = Once(MemoryPersistence())
    with pytest.raises(ConflictError):
        w.api.send_raw(data.replace(b"body line", b"other body"), rcpts=["a@ok.test"], principal=SMTP_KEY)



def test_the_claims_deadline_is_the_invocations_time_left_and_none_for_smtp() -> None:
    """r16: an API create's claim may be taken over once its Lambda invocation is over (Lambda
    stops it then); SMTP submission's accept has no such stop, so its claim gives no deadline
    (the store then holds it UNCOMMITTED_AGE, while a retry is told to wait)."""

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 5000

    seen: list = []

    def spy(store: Any) -> None:
        create = store.create
        store.create = lambda *a, **kw: (seen.append(a[4] if len(a) > 4 else kw.get("once")), create(*a, **kw))[1]

    w = World(idempotent=True)
    spy(w.store)
    w.api.send(w.request("a@ok.test"), principal=KEY, idempotency_key="d1", context=Context())
    w.api.send_batch(_batch("b@ok.test"), principal=KEY, idempotency_key="d2", context=Context())
    s = SmtpWorld()
    spy(s.store)
    s.send(b"Message-ID: <d3@app>\r\n" + MSG)
    assert [o.busy is not None and 4 < o.busy <= 5 for o in seen[:2]] == [True, True]
    assert seen[2] is not None and seen[2].busy is None
