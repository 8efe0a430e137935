"""The API answers what its OpenAPI document declares (issue 8, item 23), over real HTTP.

Undeclared methods get 405 with an Allow header in the one JSON error shape, from the app
itself: the local server passes every method through (http.server would answer an HTML 501)
and the template routes ANY /{proxy+} to the function, so AWS answers the same. The full
`schemathesis --checks all` run is tests/e2e/test_api_schemathesis.py.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from api_rig import call, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack():
    st = start_stack("127.0.16")
    yield st
    stop_stack(st)


def raw(stack, method, path, body=None, headers=None):
    u = urlsplit(stack.api.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Authorization": f"Bearer {stack.api_key}", **(headers or {})}
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "QUERY", "DELETE", "PUT", "CONNECT"])
def test_undeclared_methods_are_405_with_allow_in_the_error_shape(stack, method):
    status, headers, data = raw(stack, method, "/v1/messages")
    assert status == 405, data
    assert headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert headers["content-type"] == "application/json"
    err = json.loads(data)["error"]
    assert err["code"] == "method_not_allowed" and method in err["message"]


def test_allow_lists_exactly_the_resource_methods(stack):
    cases = {"/v1/messages/batch": "POST, OPTIONS",  # a literal path is not a message id
             "/v1/messages/01m8mgss5nz5jtybjaryk3xtt0": "GET, HEAD, OPTIONS",
             "/v1/suppressions/a@example.com": "DELETE, GET, HEAD, PUT, OPTIONS",
             "/v1/domains/example.com/verify": "POST, OPTIONS",
             "/openapi.json": "GET, HEAD, OPTIONS"}
    for path, allow in cases.items():
        status, headers, _ = raw(stack, "PATCH", path)
        assert (status, headers.get("allow")) == (405, allow), path
        status, headers, data = raw(stack, "OPTIONS", path)
        assert (status, headers.get("allow"), data) == (204, allow, b""), path
    status, _, data = raw(stack, "PATCH", "/v1/nothing-here")
    assert status == 404 and json.loads(data)["error"]["code"] == "not_found"


def test_head_is_get_without_a_body(stack):
    status, headers, data = raw(stack, "HEAD", "/v1/messages?limit=1")
    assert status == 200 and data == b"" and headers["content-type"] == "application/json"


def test_the_function_itself_answers_405_as_api_gateway_would_deliver_it(stack):
    """The same through the handler with an API Gateway event (ANY /{proxy+} in AWS)."""
    fn = stack.functions["SendApiFunction"]
    event = json.loads((ROOT / "events" / "api_list_messages.json").read_text())
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "PATCH"
    event["headers"]["Authorization"] = f"Bearer {stack.api_key}"
    if event.get("multiValueHeaders"):
        event["multiValueHeaders"]["Authorization"] = [f"Bearer {stack.api_key}"]
    res = fn.invoke(event)
    multi = res.get("multiValueHeaders") or {}
    headers = {**(res.get("headers") or {}), **{k: ", ".join(v) for k, v in multi.items()}}
    assert res["statusCode"] == 405 and headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert json.loads(res["body"])["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("media", ["text/plain", "multipart/form-data", "application/x-www-form-urlencoded",
                                   "application/xml"])
@pytest.mark.parametrize("path", ["/v1/uploads", "/v1/messages", "/v1/domains"])
def test_a_body_that_is_not_json_is_415_not_503(stack, media, path):
    status, _, data = raw(stack, "POST", path, body=b'{"filename": "a", "size": 1}',
                          headers={"Content-Type": media})
    assert status == 415 and json.loads(data)["error"]["field"] == "Content-Type", data


@pytest.mark.parametrize("since", ["0.5", "1700000000", "2026-01-01", "yesterday", "2026-13-01T00:00:00Z"])
def test_since_is_an_rfc_3339_date_time_as_declared(stack, since):
    status, _, out = call(stack, "GET", f"/v1/messages?since={since}")
    assert status == 422 and out["error"]["field"] == "since", out


def test_malformed_path_and_query_parameters_are_refused_naming_them(stack):
    status, _, out = call(stack, "GET", "/v1/messages/not-an-id")
    assert status == 422 and out["error"]["field"] == "message_id", out
    status, _, out = call(stack, "GET", "/v1/messages?cursor=not%20base64")
    assert status == 422 and out["error"]["field"] == "cursor", out
    status, _, out = call(stack, "GET", "/v1/messages?since=2026-01-01T00:00:00Z")
    assert status == 200, out


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_json_bodies_are_400_at_once(stack, depth, shape):
    import time

    body = (b"[" * depth + b"]" * depth) if shape == "array" else (b'{"a":' * depth + b"1" + b"}" * depth)
    started = time.monotonic()
    status, _, data = raw(stack, "POST", "/v1/messages", body=body,
                          headers={"Content-Type": "application/json"})
    assert (status, json.loads(data)["error"]["code"]) == (400, "invalid_json"), data
    assert time.monotonic() - started < 5
