"""The send API's handler fed HTTP API events (ApiType=HTTP, issue 15 item 4).

An HTTP API with payload format 1.0 sends the REST proxy event's shape with these differences
(AWS: "Working with AWS Lambda proxy integrations for HTTP APIs", payload format 1.0): a
top-level `version` "1.0", header names in lower case, `requestContext.stage` "$default" (the
template's HTTP API stage: no stage in the path), `requestContext.resourceId` the route key, an
`authorizer` with null claims and no `apiKey` in `identity` (HTTP APIs have no API keys; the
app's Bearer keys are its own). events/api_http_*.json are such events; here the template's
handler answers them on a local stack as it answers the REST samples, and the mail goes out.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest
from api_rig import call, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {"api_http_post_message.json": "api_post_message.json",
           "api_http_list_messages.json": "api_list_messages.json"}


@pytest.fixture(scope="module")
def stack():
    st = start_stack("127.0.171")
    yield st
    stop_stack(st)


def http_event(name: str, key: str, body: dict | None = None) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / name).read_text())
    event["headers"]["authorization"] = f"Bearer {key}"
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-length"] = str(len(event["body"].encode()))
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def test_the_samples_are_http_api_payload_1_0_events() -> None:
    for name, rest_name in SAMPLES.items():
        ev = json.loads((ROOT / "events" / name).read_text())
        rest = json.loads((ROOT / "events" / rest_name).read_text())
        assert ev["version"] == "1.0" and "version" not in rest
        assert set(ev) - set(rest) == {"version"} and set(rest) <= set(ev)
        ctx = ev["requestContext"]
        assert ctx["stage"] == "$default" and ctx["resourceId"] == "ANY /{proxy+}" and ctx["apiId"]
        assert "http" not in ctx and "routeKey" not in ev  # payload format 2.0's fields
        assert "apiKey" not in ctx["identity"] and ctx["authorizer"] == {"claims": None, "scopes": None}
        assert ev["headers"] and all(k == k.lower() for k in ev["headers"])
        assert (ev["path"], ev["httpMethod"], ev["body"]) == (rest["path"], rest["httpMethod"], rest["body"])


def test_the_samples_get_the_answers_the_rest_samples_get(stack: Any) -> None:
    from outpost.bootstrap import domains_table
    from outpost.records import Domain

    domains_table().put_domain(Domain(domain="shop.example.com", verified=True))
    fn = stack.functions["SendApiFunction"]
    res = fn.invoke(http_event("api_http_post_message.json", stack.api_key))
    assert res["statusCode"] == 202, res
    sent = json.loads(res["body"])
    assert [r["address"] for r in sent["recipients"]] == ["alice@example.org"]
    # The lower-case idempotency-key is the Idempotency-Key: the same request answers the same.
    again = fn.invoke(http_event("api_http_post_message.json", stack.api_key))
    assert again["statusCode"] == 202 and json.loads(again["body"])["id"] == sent["id"]
    res = fn.invoke(http_event("api_http_list_messages.json", stack.api_key))
    assert res["statusCode"] == 200, res
    assert [i["id"] for i in json.loads(res["body"])["items"]] == [sent["id"]]
    # ... and the lower-case authorization is the key: without it, 401.
    anonymous = http_event("api_http_list_messages.json", stack.api_key)
    del anonymous["headers"]["authorization"], anonymous["multiValueHeaders"]["authorization"]
    assert fn.invoke(anonymous)["statusCode"] == 401


def test_a_send_over_an_http_api_event_is_delivered(stack: Any) -> None:
    rcpt = "http-api@accept.test"
    event = http_event("api_http_post_message.json", stack.api_key, {
        "from": "Outpost Demo <hello@outpost.test>", "to": [rcpt], "subject": "Over an HTTP API",
        "text": "payload format 1.0"})
    event["headers"]["idempotency-key"] = event["multiValueHeaders"]["idempotency-key"][0] = "http-api-delivered"
    res = stack.functions["SendApiFunction"].invoke(event)
    assert res["statusCode"] == 202, res
    mid = json.loads(res["body"])["id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _, m = call(stack, "GET", f"/v1/messages/{mid}")
        assert status == 200, m
        if m["recipients"][0]["state"] == "delivered":
            break
        time.sleep(0.25)
    assert m["recipients"][0]["state"] == "delivered", m
    got = [r for r in stack.mx["accept.test"].server.received if rcpt in r.rcpt_tos]
    assert len(got) == 1 and b"Subject: Over an HTTP API" in got[0].data


@pytest.fixture(scope="module")
def http_api(stack: Any):
    """The local API server sending the handler HTTP API events (outpost_local.apigw, api_type HTTP)."""
    from outpost_local.apigw import ApiServer

    server = ApiServer(stack.functions["SendApiFunction"], "127.0.0.1", 0, api_type="HTTP")
    server.start()
    yield server
    server.stop()


def request(server: Any, key: str, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    data = json.dumps(body) if body is not None else None
    conn.request(method, path, body=data, headers={"Authorization": f"Bearer {key}",
                                                   "Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def test_the_api_over_http_api_events_answers_as_over_rest_events(stack: Any, http_api: Any) -> None:
    seen: list[dict] = []
    fn = stack.functions["SendApiFunction"]
    real = fn.invoke
    fn.invoke = lambda event: (seen.append(event), real(event))[1]  # type: ignore[method-assign]
    try:
        msg = {"from": "hello@outpost.test", "to": ["over-http@accept.test"], "subject": "Hi", "text": "x"}
        status, headers, data = request(http_api, stack.api_key, "POST", "/v1/messages", msg,
                                        {"Idempotency-Key": "over-http-api"})
        assert status == 202, data
        mid = json.loads(data)["id"]
        status, headers, data = request(http_api, stack.api_key, "POST", "/v1/messages", msg,
                                        {"Idempotency-Key": "over-http-api"})
        assert (status, json.loads(data)["id"], headers.get("idempotent-replayed")) == (202, mid, "true")
        status, _, data = request(http_api, stack.api_key, "GET", f"/v1/messages/{mid}?x=1")
        assert status == 200 and json.loads(data)["id"] == mid
        status, headers, data = request(http_api, stack.api_key, "PATCH", "/v1/messages")
        assert (status, headers["allow"]) == (405, "GET, HEAD, POST, OPTIONS")
        status, headers, data = request(http_api, stack.api_key, "HEAD", "/v1/messages?limit=1")
        assert status == 200 and data == b""
        status, _, data = request(http_api, "", "GET", "/openapi.json")
        assert status == 200 and "/v1/messages" in json.loads(data)["paths"]
        assert request(http_api, "op_never_issued", "GET", "/v1/messages")[0] == 401
    finally:
        del fn.invoke
    # ... and what the handler got were HTTP API events.
    assert seen and all(e["version"] == "1.0" and e["requestContext"]["stage"] == "$default" for e in seen)
    assert all(k == k.lower() for e in seen for k in e["headers"])
    assert seen[0]["headers"]["idempotency-key"] == "over-http-api"
    sample = json.loads((ROOT / "events" / "api_http_post_message.json").read_text())
    assert set(seen[0]) == set(sample) and set(seen[0]["requestContext"]) == set(sample["requestContext"])
    assert set(seen[0]["requestContext"]["identity"]) == set(sample["requestContext"]["identity"])
