"""The template and webhook route modules, imported on first use (api/lazy_routes.py; issue 15
item 1), answer exactly as when they were registered at build: the same status, headers and body
for each request, the HEAD, OPTIONS and 405 answers, and the same OpenAPI document, byte for
byte. Through the real resolver (api/routes.py build_app) with the in-memory fakes."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from outpost.api import lazy_routes, routes
from outpost.api.auth import KeyRing, key_hash
from outpost.api.routes import build_app
from outpost.api.service import QueryService, SendService
from outpost.records import ApiKey
from outpost.templates.service import TemplateService
from outpost.webhooks.service import WebhookService
from tests.fakes.store import FakeApiKeys, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.templates import FakeTemplates
from tests.fakes.webhooks import FakeWebhookJobs, FakeWebhooks

T0 = 1_800_000_000.0
TEMPLATE = json.dumps({"alias": "t", "name": "t", "subject": "Hi {{x}}", "html": "<p>{{x}}</p>"})
REQUESTS: list[tuple[str, str, str | None, str]] = [  # method, path, body, key
    ("GET", "/v1/templates", None, "op_all"),
    ("POST", "/v1/templates", TEMPLATE, "op_read"),  # 403 before anything is stored
    ("POST", "/v1/templates", '{"alias": "BAD"}', "op_all"),  # 422 naming the field
    ("POST", "/v1/templates", TEMPLATE, "op_all"),
    ("POST", "/v1/templates", TEMPLATE, "op_all"),  # 409
    ("GET", "/v1/templates/t", None, "op_all"),
    ("HEAD", "/v1/templates/t", None, "op_all"),
    ("GET", "/v1/templates/t?version=x", None, "op_all"),
    ("PUT", "/v1/templates/t", '{"subject": "Bye {{x}}"}', "op_all"),
    ("POST", "/v1/templates/t/render", '{"variables": {"x": "<b>"}, "version": 1}', "op_read"),
    ("PATCH", "/v1/templates/t", "{}", "op_all"),  # 405 with Allow
    ("OPTIONS", "/v1/templates/t/render", None, "op_all"),
    ("GET", "/v1/templates", None, "op_all"),
    ("DELETE", "/v1/templates/t", None, "op_all"),
    ("GET", "/v1/templates/t", None, "op_all"),  # 404
    ("GET", "/v1/webhooks", None, "op_read"),  # 403: admin only
    ("GET", "/v1/webhooks", None, "op_all"),
    ("HEAD", "/v1/webhooks", None, "op_all"),
    ("POST", "/v1/webhooks", '{"url": "ftp://x", "events": ["message.delivered"]}', "op_all"),  # 422 url
    ("POST", "/v1/webhooks", '{"events": []}', "op_all"),
    ("GET", "/v1/webhooks/wh_0000000000000000", None, "op_all"),  # 404
    ("GET", "/v1/webhooks/nope", None, "op_all"),  # 422 on the path's pattern
    ("POST", "/v1/webhooks/wh_0000000000000000/replay", '{"since": "yesterday"}', "op_all"),
    ("PUT", "/v1/webhooks", "{}", "op_all"),  # 405
    ("GET", "/v1/webhooks", None, "op_nope"),  # 401
    ("GET", "/openapi.json", None, ""),
]


def _app() -> Any:
    keys = FakeApiKeys(*(ApiKey(key_hash=key_hash(k), key_id=f"key{n:09d}", scopes=scopes, name=k)
                         for n, (k, scopes) in enumerate((("op_all", ("admin", "read", "send")),
                                                          ("op_read", ("read",))))))
    templates = TemplateService(FakeTemplates(), clock=lambda: T0)
    sender = SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),  # type: ignore[arg-type]
                         domains=FakeDomains("shop.test"), templates=templates, clock=lambda: T0)
    webhooks = WebhookService(FakeWebhooks(), FakeWebhookJobs(), resolve=lambda host: [], clock=lambda: T0)  # type: ignore[arg-type]
    return build_app(keys=KeyRing(keys), sender=sender, queries=QueryService(store=None, suppressions=None),  # type: ignore[arg-type]
                     templates=templates, webhooks=webhooks)


def _answers(app: Any, requests: list[tuple[str, str, str | None, str]]) -> list[dict]:
    out = []
    for method, target, body, key in requests:
        path, _, query = target.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&")) if query else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        out.append(app.resolve({"httpMethod": method, "path": path, "resource": "/{proxy+}", "headers": headers,
                                "multiValueHeaders": {}, "queryStringParameters": params,
                                "multiValueQueryStringParameters": None, "body": body, "isBase64Encoded": False,
                                "requestContext": {"stage": "v1"}}, None))
    return out


def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_app as before the change: each module imported and its routes registered at build."""
    def register(app: Any, needs: Any, service: Any, group: lazy_routes.LazyGroup) -> None:
        getattr(importlib.import_module(group.module), group.adder)(app, needs, service)
    monkeypatch.setattr(routes, "add_lazy_routes", register)


def test_the_lazy_route_modules_answer_as_the_modules_registered_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    lazy = _answers(_app(), REQUESTS)
    _eager(monkeypatch)
    eager = _answers(_app(), REQUESTS)
    assert [a["statusCode"] for a in lazy] == [200, 403, 422, 201, 409, 200, 200, 422, 200, 200, 405, 204, 200, 200,
                                               404, 403, 200, 200, 422, 422, 404, 422, 422, 405, 401, 200]
    for request, got, want in zip(REQUESTS, lazy, eager, strict=True):
        assert got == want, request
    document = json.loads(lazy[-1]["body"])
    assert document["paths"]["/v1/templates/{alias}/render"]["post"]["summary"].startswith("Preview")
    assert "/v1/webhooks/{webhook_id}/enable" in document["paths"]


def test_the_document_first_then_the_routes_answer_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAPI document binds every lazy route before any request has used one."""
    first = [REQUESTS[-1], *REQUESTS[:-1]]
    lazy = _answers(_app(), first)
    _eager(monkeypatch)
    assert lazy == _answers(_app(), first)


def test_building_the_app_imports_no_lazy_route_module_and_a_request_imports_its_own() -> None:
    import sys

    for name in ("outpost.api.templates", "outpost.api.webhooks"):
        sys.modules.pop(name, None)
    app = _app()
    assert "outpost.api.templates" not in sys.modules and "outpost.api.webhooks" not in sys.modules
    assert _answers(app, [("GET", "/v1/webhooks", None, "op_all")])[0]["statusCode"] == 200
    assert "outpost.api.webhooks" in sys.modules and "outpost.api.templates" not in sys.modules


def test_a_table_that_differs_from_its_module_fails_the_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A route added to a module but not to its table, or a scope changed in one of them, is a
    503 (the catch-all) at the first request, not an answer different from the module's."""
    wrong = lazy_routes.LazyGroup(lazy_routes.WEBHOOKS.module, lazy_routes.WEBHOOKS.adder,
                                  (("GET", "/v1/webhooks", "read"), *lazy_routes.WEBHOOKS.routes[2:]))
    monkeypatch.setattr(routes, "WEBHOOKS", wrong)
    assert _answers(_app(), [("GET", "/v1/webhooks", None, "op_all")])[0]["statusCode"] == 503
    with pytest.raises(RuntimeError, match="lazy table"):
        lazy_routes.bind_all(routes.routes_of(_app()))
