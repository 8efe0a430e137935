"""Hostile template requests against DynamoDB Local (TemplatesTable provisioned from
template.yaml): the resolver (api/routes.py build_app) with the real TemplateStore. A version
number no key can hold is "no such version" (404, or 422 template_version on a send), not
DynamoDB's ValidationException (a 503)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.api.auth import KeyRing, key_hash
from outpost.api.routes import build_app
from outpost.api.service import QueryService, SendService
from outpost.records import ApiKey
from outpost.store import TemplateStore
from outpost.templates.service import TemplateService
from tests.fakes.store import FakeApiKeys, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions

pytestmark = pytest.mark.timeout(180)
HUGE = "9" * 1100  # a valid JSON integer; as the version key it is over DynamoDB's 1,024 bytes


@pytest.fixture(scope="module")
def hit(aws: Any) -> Any:
    store = TemplateStore(aws.client("dynamodb"), aws.env["OUTPOST_TEMPLATES_TABLE"])
    templates = TemplateService(store)
    keys = FakeApiKeys(ApiKey(key_hash=key_hash("op_all"), key_id="k1", scopes=("admin", "read", "send"), name="t"))
    sender = SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),  # type: ignore[arg-type]
                         domains=FakeDomains("shop.test"), templates=templates)
    app = build_app(keys=KeyRing(keys), sender=sender, queries=QueryService(store=None, suppressions=None),  # type: ignore[arg-type]
                    templates=templates)

    def call(method: str, path: str, body: str | None = None, query: dict | None = None) -> tuple[int, dict]:
        ev = {"httpMethod": method, "path": path, "resource": "/{proxy+}",
              "headers": {"Authorization": "Bearer op_all", "Content-Type": "application/json"},
              "body": body, "isBase64Encoded": False, "requestContext": {"stage": "prod"},
              "queryStringParameters": query,
              "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None}
        res = app.resolve(ev, None)
        return res["statusCode"], json.loads(res["body"])

    status, out = call("POST", "/v1/templates", json.dumps(
        {"alias": "hostile", "name": "h", "subject": "Hi {{x}}", "html": "<p>{{x}}</p>"}))
    assert status in (201, 409), out
    return call


@pytest.mark.parametrize("version", [HUGE, "10000000000"])  # past the key; one digit past its width
def test_a_version_no_key_can_hold_is_not_found(hit: Any, version: str) -> None:
    status, out = hit("GET", "/v1/templates/hostile", query={"version": version})
    assert (status, out["error"]["field"]) == (404, "version"), out
    status, out = hit("POST", "/v1/templates/hostile/render", f'{{"variables": {{"x": 1}}, "version": {version}}}')
    assert (status, out["error"]["field"]) == (404, "version"), out
    status, out = hit("POST", "/v1/messages", json.dumps(
        {"from": "shop@shop.test", "to": "a@b.test", "template": "hostile", "variables": {"x": 1}})[:-1]
        + f', "template_version": {version}}}')
    assert (status, out["error"]["field"]) == (422, "template_version"), out
    status, out = hit("GET", "/v1/templates/hostile", query={"version": "1"})
    assert status == 200 and out["version"] == 1, out
