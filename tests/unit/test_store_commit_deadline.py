"""A create that outlives UNCOMMITTED_AGE (s16f item 1): `load` deletes recipients without a META
item once they are UNCOMMITTED_AGE old, so a create whose puts stall (SMTP submission runs
outside Lambda; each PutItem can take ~55 s with retries) must not commit after that: short of
its META put COMMIT_WITHIN after it began (by the store's clock), it takes back what it wrote
and fails as a failed put does: the API answers 503, SMTP submission 451 4.3.0.

The real MessageStore over an in-memory DynamoDB whose every PutItem takes `stall` seconds of
a fake clock (the fake store writes a message in one step, so it cannot model this)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.api.auth import KeyRing, key_hash
from outpost.api.routes import build_app
from outpost.api.service import QueryService, SendService
from outpost.errors import StoreBusyError
from outpost.models import SendRequest
from outpost.records import ApiKey
from outpost.store import COMMIT_WITHIN, UNCOMMITTED_AGE, MessageStore
from outpost.submission.replies import TEMPORARY, reply_for
from tests.fakes.store import FakeApiKeys, FakeClock, FakeDomains, FakeJobs, FakeSuppressions

SENDER = "shop.test"
TO = ["a@x.test", "b@x.test", "c@x.test"]  # 3 recipient puts, then the META put


class _Exceptions:
    class ConditionalCheckFailedException(Exception):
        pass


class StallingDynamo:
    """PutItem (conditional on a new key) and BatchWriteItem deletes over a dict; each PutItem
    takes `stall` seconds of `clock` before it lands."""

    exceptions = _Exceptions

    def __init__(self, clock: FakeClock, stall: float) -> None:
        self.clock, self.stall = clock, stall
        self.items: dict[tuple[str, str], dict] = {}

    def put_item(self, TableName: str, Item: dict, **_: Any) -> dict:  # noqa: N803 - boto3's names
        self.clock.advance(self.stall)
        key = (Item["pk"]["S"], Item["sk"]["S"])
        if key in self.items:
            raise self.exceptions.ConditionalCheckFailedException()
        self.items[key] = Item
        return {}

    def batch_write_item(self, RequestItems: dict) -> dict:  # noqa: N803
        for reqs in RequestItems.values():
            for r in reqs:
                k = r["DeleteRequest"]["Key"]
                self.items.pop((k["pk"]["S"], k["sk"]["S"]), None)
        return {"UnprocessedItems": {}}


def _api(stall: float) -> tuple[SendService, StallingDynamo, FakeJobs]:
    clock = FakeClock()
    ddb = StallingDynamo(clock, stall)
    jobs = FakeJobs()
    store = MessageStore(ddb, "t", None, "b", clock=clock)
    return SendService(store=store, suppressions=FakeSuppressions(), queue=jobs,  # type: ignore[arg-type]
                       domains=FakeDomains(SENDER), clock=clock), ddb, jobs  # type: ignore[arg-type]


def _request() -> SendRequest:
    return SendRequest.model_validate({"from": f"app@{SENDER}", "to": TO, "subject": "slow", "text": "Hi.\n"})


def test_the_deadline_leaves_room_for_the_meta_put_and_the_callers_reads() -> None:
    assert UNCOMMITTED_AGE - COMMIT_WITHIN >= 4 * 55  # a stalled META put, and the reads before the create


@pytest.mark.parametrize("stall", [COMMIT_WITHIN / 3 + 1, (UNCOMMITTED_AGE + 30) / 3])
def test_a_create_too_slow_to_commit_takes_itself_back_and_fails(stall: float) -> None:
    api, ddb, jobs = _api(stall)
    with pytest.raises(StoreBusyError, match="too late to commit"):
        api.send_one(_request())
    assert ddb.items == {}  # its recipients taken back; no META ever put
    assert jobs.sent == []  # not accepted: no job


def test_a_slow_create_within_the_deadline_commits() -> None:
    api, ddb, jobs = _api(COMMIT_WITHIN / 3 - 1)  # the META put starts 3 s before the deadline
    mid = api.send_one(_request())["id"]
    assert sorted(sk for _, sk in ddb.items) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    assert [j.message_id for j, _ in jobs.sent] == [mid]


def test_the_api_answers_503_and_submission_451() -> None:
    api, ddb, _ = _api(COMMIT_WITHIN / 3 + 1)
    keys = FakeApiKeys(ApiKey(key_hash=key_hash("op_send"), key_id="k", scopes=("send",), name="t"))
    app = build_app(keys=KeyRing(keys), sender=api, queries=QueryService(store=None, suppressions=None))
    ev = {"httpMethod": "POST", "path": "/v1/messages", "resource": "/{proxy+}",
          "headers": {"Authorization": "Bearer op_send", "Content-Type": "application/json"},
          "body": json.dumps({"from": f"app@{SENDER}", "to": TO, "subject": "slow", "text": "Hi."}),
          "isBase64Encoded": False, "requestContext": {"stage": "prod"},
          "queryStringParameters": None, "multiValueQueryStringParameters": None}
    res = app.resolve(ev, None)
    assert res["statusCode"] == 503, res
    assert json.loads(res["body"])["error"]["code"] == "temporarily_unavailable"
    assert ddb.items == {}
    assert reply_for(StoreBusyError("the create ran 700 s: too late to commit")) == TEMPORARY
