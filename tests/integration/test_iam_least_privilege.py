"""Issue 8, item 27: each function's role grants what its code calls, and (where narrowed) no
more. The DynamoDB calls a function really makes are recorded from the boto3 client while
its handler runs in this thread on the local stack, then checked against template.yaml's
policies (SAM policy templates expanded as SAM does)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from samtranslator.yaml_helper import yaml_parse

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table, message_store
from outpost_local.mx import build_dsn
from outpost_local.stack import SENDING_DOMAIN
from tests.conftest import load_event

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
# SAM's policy templates, as SAM expands them (table ARN and table/index/*).
SAM_DYNAMO = {
    "DynamoDBCrudPolicy": {"GetItem", "DeleteItem", "PutItem", "Scan", "Query", "UpdateItem",
                           "BatchWriteItem", "BatchGetItem", "DescribeTable", "ConditionCheckItem"},
    "DynamoDBReadPolicy": {"GetItem", "Scan", "Query", "BatchGetItem", "DescribeTable"},
}
Grant = tuple[str, str | None, str]  # (logical table, index or "*" or None for the table, action)


def _grants(function: str) -> set[Grant]:
    t = yaml_parse((ROOT / "template.yaml").read_text())
    out: set[Grant] = set()
    for p in t["Resources"][function]["Properties"]["Policies"]:
        if not isinstance(p, dict):
            continue
        if "Statement" not in p:
            (name, args), = p.items()
            if name in SAM_DYNAMO:
                table = args["TableName"]["Ref"]
                out |= {(table, idx, a) for a in SAM_DYNAMO[name] for idx in (None, "*")}
            continue
        for s in p["Statement"]:
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            res = s["Resource"]
            for r in res if isinstance(res, list) else [res]:
                if isinstance(r, dict) and "Fn::GetAtt" in r and r["Fn::GetAtt"][1] == "Arn":
                    table, idx = r["Fn::GetAtt"][0], None
                elif isinstance(r, dict) and isinstance(r.get("Fn::Sub"), str) and "/index/" in r["Fn::Sub"]:
                    head, idx = r["Fn::Sub"].split("/index/")
                    table = head.removeprefix("${").removesuffix(".Arn}")
                else:
                    continue
                out |= {(table, idx, a.removeprefix("dynamodb:")) for a in actions if a.startswith("dynamodb:")}
    return out


def _allowed(grants: set[Grant], call: Grant) -> bool:
    table, idx, action = call
    return (table, idx, action) in grants or (idx is not None and (table, "*", action) in grants)


@contextmanager
def recording(local_stack: Any, threads_named: str | None = None) -> Iterator[set[Grant]]:
    """DynamoDB calls made by this thread (and by threads whose name starts with
    `threads_named`: a function's own worker pool) through any boto3 client (the handlers keep
    the clients they were built with): (table, index, op). The calls still go to the server."""
    from botocore.client import BaseClient

    names = {v: k for k, v in local_stack.stack.physical.items()}
    calls: set[Grant] = set()
    me = threading.get_ident()
    real = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict) -> Any:
        mine = threading.get_ident() == me or (
            threads_named is not None and threading.current_thread().name.startswith(threads_named))
        if mine and client.meta.service_model.service_name == "dynamodb":
            record(client.meta.service_model.operation_model(operation), params)
        return real(client, operation, params)

    def record(model: Any, params: dict) -> None:
        op = model.name
        if op == "TransactWriteItems":  # authorised per contained write
            for item in params["TransactItems"]:
                (kind, body), = item.items()
                calls.add((names[body["TableName"]], None, {"Put": "PutItem", "Update": "UpdateItem",
                                                             "Delete": "DeleteItem",
                                                             "ConditionCheck": "ConditionCheckItem"}[kind]))
        elif "RequestItems" in params:
            calls.update((names[t], None, op) for t in params["RequestItems"])
        else:
            calls.add((names[params["TableName"]], params.get("IndexName"), op))

    BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        BaseClient._make_api_call = real  # type: ignore[method-assign]


def test_bounce_processor_uses_exactly_its_narrowed_grants(api, local_stack):
    addr = f"iam-{secrets.token_hex(3)}@accept.test"
    status, res = api.call("POST", "/v1/messages", {"from": f"shop@{SENDING_DOMAIN}", "to": addr,
                                                    "subject": "iam", "text": "hi"})
    assert status == 202, res
    api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] == "delivered")
    received = next(r for r in reversed(local_stack.mx["accept.test"].server.received) if addr in r.rcpt_tos)
    key = f"inbound/s3/{secrets.token_hex(8)}.eml"
    boto3.client("s3").put_object(Bucket=local_stack.env["OUTPOST_BUCKET"], Key=key,
                                  Body=build_dsn(received, addr, reporting_mta="mx.accept.test", status="5.1.1"))
    event = load_event("s3_inbound.json")
    event["Records"][0]["s3"]["bucket"]["name"] = local_stack.env["OUTPOST_BUCKET"]
    event["Records"][0]["s3"]["object"]["key"] = key
    with recording(local_stack) as calls:
        out = local_stack.functions["BounceProcessorFunction"].invoke(event)
    assert out["results"][0]["result"] == "matched", out
    grants = _grants("BounceProcessorFunction")
    assert calls and all(_allowed(grants, c) for c in calls), calls - grants
    used_on_messages = {c for c in calls if c[0] == "MessagesTable"}
    assert used_on_messages == {g for g in grants if g[0] == "MessagesTable"}  # nothing unused


def test_sweeper_uses_exactly_its_grants(local_stack):
    from outpost.api.service import SendService
    from outpost.bootstrap import domains_table, job_queue, suppression_store
    from outpost.models import SendRequest

    at = time.time() - 3600
    svc = SendService(store=message_store(), suppressions=suppression_store(), queue=job_queue(),
                      domains=domains_table(), clock=lambda: at)
    mid = svc.send_one(SendRequest.model_validate({"from": f"shop@{SENDING_DOMAIN}", "to": "iam-sweep@accept.test",
                                                   "subject": "x", "text": "y"}), enqueue=False)["id"]
    assert message_store().load(mid).recipients[0].index == 0
    # An API key in warn whose rates have fallen: the sweep's reputation evaluation reads the
    # day's active scopes and the key's hours (Query, gsi1 Query), its state (BatchGetItem),
    # and clears it (PutItem).
    from outpost.bootstrap import reputation
    from outpost.records import ReputationState
    from outpost.reputation import days_back, key_scope

    scope, now = key_scope(f"iam-{secrets.token_hex(3)}"), time.time()
    reputation().store.mark_active([scope], days_back(now, 1)[0], now)
    assert reputation().store.put_rep_state(ReputationState(scope, "warn", "2026-01-01T00:00:00Z"), None)
    with recording(local_stack) as calls:
        out = local_stack.functions["SweeperFunction"].invoke(load_event("schedule.json"))
    assert out["reputation_moved"] >= 1 and reputation().store.rep_states([scope])[scope].state == "ok", out
    grants = _grants("SweeperFunction")
    # Query on gsi5, UpdateItem; the reputation evaluation's: all used, nothing else
    assert calls == grants, (calls, grants)


def test_api_only_reads_and_stamps_keys(local_stack):
    key, _ = KeyRing(api_keys_table()).create("iam probe", ["admin"])  # fresh: its first use stamps it
    event = load_event("api_list_messages.json")
    event["headers"] = dict(event.get("headers") or {}, Authorization=f"Bearer {key}")
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    with recording(local_stack) as calls:
        out = local_stack.functions["SendApiFunction"].invoke(event)
    assert out["statusCode"] == 200, out
    grants = _grants("SendApiFunction")
    assert all(_allowed(grants, c) for c in calls), {c for c in calls if not _allowed(grants, c)}
    on_keys = {c for c in calls if c[0] == "ApiKeysTable"}
    assert on_keys == {("ApiKeysTable", None, "GetItem"), ("ApiKeysTable", None, "UpdateItem")}
    # GET /v1/reputation as an admin lists every key: the one Scan of the keys table (issue 11).
    event["path"] = "/v1/reputation"
    with recording(local_stack) as more:
        out = local_stack.functions["SendApiFunction"].invoke(event)
    assert out["statusCode"] == 200, out
    assert all(_allowed(grants, c) for c in more), {c for c in more if not _allowed(grants, c)}
    on_keys |= {c for c in more if c[0] == "ApiKeysTable"}
    assert ("ApiKeysTable", None, "Scan") in on_keys
    assert {g for g in grants if g[0] == "ApiKeysTable"} == on_keys


def test_the_sender_may_share_slow_domains(local_stack):
    """The slow-domain mark (issue 8, head-of-line): the sender's store writes and reads it with
    the sender's grants on the messages table (the calls made here, in this thread, are the
    ones delivery/domain.py makes from its worker threads)."""
    store = message_store()
    until = time.time() + 60
    with recording(local_stack) as calls:
        store.mark_slow("iam-slow.test", until)
        assert store.slow_until("iam-slow.test") == until
    assert calls == {("MessagesTable", None, "PutItem"), ("MessagesTable", None, "GetItem")}
    grants = _grants("SenderFunction")
    assert all(_allowed(grants, c) for c in calls), {c for c in calls if not _allowed(grants, c)}


def test_the_webhook_dispatcher_uses_exactly_its_grants(local_stack, api):
    """Issue 12: the dispatcher's role has its table (and its queue) only; a batch with a
    delivery and a failure uses every DynamoDB grant it has, and nothing else."""
    from outpost.events import Event
    from outpost.webhooks.records import WebhookEndpoint
    from outpost.webhooks.sink import job_for
    from outpost_local.poller import sqs_event
    from outpost_local.webhook_receiver import WebhookReceiver

    with WebhookReceiver("127.0.2.19", 0, status=lambda r: 200 if r.webhook_id.endswith("ok") else 503) as rx:
        status, wh = api.call("POST", "/v1/webhooks", {"url": rx.url, "events": ["message.delivered"]})
        assert status == 201, wh
        ep = WebhookEndpoint(wh["id"], wh["url"], ("message.delivered",), "")
        jobs = [job_for(Event(f"evt_iam_{secrets.token_hex(4)}_{n}", "message.delivered", "2026-11-30T00:00:00.000Z",
                              "m", "r@example.org", {}), ep) for n in ("ok", "ko")]
        messages = [{"MessageId": str(i), "ReceiptHandle": str(i), "Body": j.model_dump_json()}
                    for i, j in enumerate(jobs)]
        with recording(local_stack, threads_named="webhook-dispatch") as calls:
            out = local_stack.functions["WebhookDispatcherFunction"].invoke(sqs_event(messages, "arn:aws:sqs:q"))
        api.call("DELETE", f"/v1/webhooks/{wh['id']}")
    assert out == {"batchItemFailures": []} and len(rx.received) == 2
    grants = _grants("WebhookDispatcherFunction")
    assert all(_allowed(grants, c) for c in calls), {c for c in calls if not _allowed(grants, c)}
    assert {c for c in calls if c[0] == "WebhooksTable"} == {g for g in grants if g[0] == "WebhooksTable"}
    assert {c[0] for c in calls} == {"WebhooksTable"}  # no other table
