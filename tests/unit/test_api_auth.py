"""Authentication as middleware (issue 9, item 7), read from the app's own route table.

The app is built with in-memory fakes; every request goes through `app.resolve` with an API
Gateway REST proxy event, as the send API's handler does.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from outpost.api.auth import KeyRing, Principal, key_hash
from outpost.api.events import EventsApi
from outpost.api.routes import PUBLIC_PATHS, Requires, build_app, routes_of
from outpost.records import ApiKey
from tests.fakes.events import FakeEventLog
from tests.fakes.store import FakeApiKeys

SEND, READ = "op_send_key", "op_read_key"


class FakeQueries:
    """Records who the routes say the caller is."""

    def __init__(self) -> None:
        self.callers: list[Principal] = []

    def suppress(self, address: str, reason: str | None, principal: Principal) -> tuple[dict, bool]:
        self.callers.append(principal)
        return {"address": address, "suppressed": True, "source": "manual", "reason": reason,
                "created_at": "2026-01-01T00:00:00Z", "history": []}, True


class FakeDomains:
    def check(self, domain: str) -> dict:
        raise AssertionError("an anonymous request reached a domain route")


def make_app() -> tuple[Any, FakeQueries]:
    keys = FakeApiKeys(*(ApiKey(key_hash=key_hash(key), key_id=key_id, scopes=(scope,), name=key_id)
                         for key, key_id, scope in ((SEND, "sendkey", "send"), (READ, "readkey", "read"))))
    queries = FakeQueries()
    app = build_app(keys=KeyRing(keys), sender=None, queries=queries,  # type: ignore[arg-type]
                    domains=FakeDomains(),  # type: ignore[arg-type]
                    events=EventsApi(FakeEventLog()))
    return app, queries


def hit(app: Any, method: str, path: str, body: str | None = None, key: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return app.resolve({"httpMethod": method, "path": path, "resource": "/{proxy+}", "headers": headers,
                        "body": body, "isBase64Encoded": False, "requestContext": {"stage": "prod"},
                        "queryStringParameters": None, "multiValueQueryStringParameters": None}, None)


def concrete(path: str) -> str:
    """A request path for a route's rule: each <parameter> filled with a plausible value."""
    return re.sub(r"<[^>]+>", "someone@example.com", path)


def test_every_route_but_the_public_ones_refuses_a_request_without_a_key():
    app, _ = make_app()
    routes = [(r.method, r.path) for r in routes_of(app)]
    # The table is the app's own: a route added tomorrow is in it, and needs a key unless it
    # is added to PUBLIC_PATHS. (Sanity: the table is really read, with HEAD beside each GET.)
    assert {("POST", "/v1/messages"), ("DELETE", "/v1/suppressions/<address>"),
            ("POST", "/v1/domains/<domain>/rotate"), ("HEAD", "/v1/messages")} <= set(routes)
    protected = [(m, p) for m, p in routes if p not in PUBLIC_PATHS]
    assert len(protected) >= 13 + 6
    for method, path in protected:
        body = "{}" if method in ("POST", "PUT") else None
        for key in (None, "op_not_a_key"):
            res = hit(app, method, concrete(path), body, key)
            assert res["statusCode"] == 401, (method, path, key, res)
            if method != "HEAD" or res["body"]:
                assert json.loads(res["body"])["error"]["code"] == "unauthorized"
    for method, path in [(m, p) for m, p in routes if p in PUBLIC_PATHS]:
        assert hit(app, method, path)["statusCode"] == 200, (method, path)


def test_every_protected_route_names_the_scope_it_needs():
    app, _ = make_app()
    for route in routes_of(app):
        scopes = [m.scope for m in route.middlewares if isinstance(m, Requires)]
        if route.path in PUBLIC_PATHS:
            assert scopes == [], route.path
        else:
            assert len(scopes) == 1, (route.method, route.path)


def test_anonymous_callers_are_refused_before_validation_and_unknown_v1_paths_are_hidden():
    app, _ = make_app()
    # Malformed or invalid: a key holder is told why; an anonymous caller learns nothing.
    assert hit(app, "POST", "/v1/messages", "{not json")["statusCode"] == 401
    assert hit(app, "POST", "/v1/messages", "{not json", key=SEND)["statusCode"] == 400
    assert hit(app, "POST", "/v1/messages/batch", json.dumps({"messages": [{}] * 501}))["statusCode"] == 401
    assert hit(app, "PATCH", "/v1/messages")["statusCode"] == 401  # before 405
    assert hit(app, "GET", "/v1/no-such-thing")["statusCode"] == 401
    assert hit(app, "GET", "/v1/no-such-thing", key=READ)["statusCode"] == 404
    assert hit(app, "GET", "/no-such-thing")["statusCode"] == 404  # outside /v1/: plain 404


def test_the_principal_reaches_the_route_through_the_resolver_context():
    app, queries = make_app()
    res = hit(app, "PUT", "/v1/suppressions/a@example.org", json.dumps({"reason": "asked"}), key=SEND)
    assert res["statusCode"] == 201, res
    assert [(p.key_id, p.scopes) for p in queries.callers] == [("sendkey", frozenset({"send"}))]
    assert app.context == {}  # nothing left behind for the next request
    # The scope is checked after validation: a read key is refused (403) when the body is valid.
    res = hit(app, "PUT", "/v1/suppressions/a@example.org", json.dumps({"reason": "asked"}), key=READ)
    assert res["statusCode"] == 403 and len(queries.callers) == 1


@pytest.mark.parametrize("method,status,allow", [("OPTIONS", 204, "PUT, OPTIONS"), ("PATCH", 405, "PUT, OPTIONS")])
def test_methods_are_answered_from_the_route_table(method, status, allow):
    app, _ = make_app()
    res = hit(app, method, "/v1/suppressions/a@example.org", key=SEND)
    headers = {**(res.get("headers") or {}), **{k: ", ".join(v) for k, v in
                                                (res.get("multiValueHeaders") or {}).items()}}
    assert res["statusCode"] == status
    assert headers["Allow"] == allow.replace("PUT", "DELETE, GET, HEAD, PUT")
