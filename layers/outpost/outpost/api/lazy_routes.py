"""Route modules imported on the first request that reaches one of their routes (issue 15 item 1).

The send API's init registers every route (routing, 404, 405 and OPTIONS need the whole table),
but a route module's pydantic models and handlers cost its import, which the common request
(POST /v1/messages) does not need. A lazy group registers, at build, one placeholder per route
declared in its table: (method, path, scope), the scope's middleware being part of the route's
stack from the start. On the first request that matches one of them, the gate (routes.Gate,
before validation) calls `bind(route)`: the module is imported, its `add_*_routes(app, needs,
service)` runs against a recorder, and each placeholder route takes the recorded route's
handler and everything its decorator declared (summary, responses, status code, operation id).
The OpenAPI document binds every group first. A table that does not match what its module
registers fails the bind (and tests/unit/test_lazy_routes.py): the answers stay those of the
module as written.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.event_handler.api_gateway import Route

    from .routes import Scopes

# Route attributes the placeholder keeps: its middleware stack is built (and may be running).
_KEEP = frozenset({"_middleware_stack", "_middleware_stack_built", "method"})


@dataclass(frozen=True)
class LazyGroup:
    """A route module's table: `module`.`adder`(app, needs, service) registers these routes."""

    module: str
    adder: str
    routes: tuple[tuple[str, str, str], ...]  # (method, path, scope), as the module registers them


class _Recorder:
    """Stands in for the app while a route module registers: records each route's decorator
    arguments and handler; anything else is the real app's (a handler may read its context)."""

    def __init__(self, app: APIGatewayRestResolver) -> None:
        self._app = app
        self.routes: dict[tuple[str, str], tuple[Callable[..., Any], dict[str, Any]]] = {}

    def route(self, rule: str, method: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def record(func: Callable[..., Any]) -> Callable[..., Any]:
            self.routes[(method.upper(), rule)] = (func, options)
            return func
        return record

    def get(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, "GET", **options)

    def post(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, "POST", **options)

    def put(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, "PUT", **options)

    def delete(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, "DELETE", **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


class _Binding:
    """One group in one app: its placeholders' handlers, loaded once (thread-safe)."""

    def __init__(self, app: APIGatewayRestResolver, needs: Scopes, service: Any, group: LazyGroup) -> None:
        self.app, self.needs, self.service, self.group = app, needs, service, group
        self.loaded: dict[tuple[str, str], tuple[Callable[..., Any], dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def load(self) -> dict[tuple[str, str], tuple[Callable[..., Any], dict[str, Any]]]:
        with self._lock:
            if self.loaded is None:
                recorder = _Recorder(self.app)
                adder = getattr(importlib.import_module(self.group.module), self.group.adder)
                adder(recorder, self.needs, self.service)
                declared = {(m, p): s for m, p, s in self.group.routes}
                if set(recorder.routes) != set(declared) or any(
                        options.get("middlewares") != self.needs(declared[key])
                        for key, (_, options) in recorder.routes.items()):
                    raise RuntimeError(f"{self.group.module} registers other routes or scopes than its lazy table")
                self.loaded = recorder.routes
            return self.loaded

    def placeholder(self, method: str, path: str) -> Callable[..., Any]:
        def handler(**kwargs: Any) -> Any:  # the stack built before the bind calls this: forward
            return self.load()[(method, path)][0](**kwargs)
        handler.__name__ = f"lazy_{method.lower()}"  # replaced by the module's name at the bind
        handler._lazy = self  # type: ignore[attr-defined]
        return handler


def add_lazy_routes(app: APIGatewayRestResolver, needs: Scopes, service: Any, group: LazyGroup) -> None:
    """Register `group`'s routes as placeholders, bound to its module on first use."""
    binding = _Binding(app, needs, service, group)
    for method, path, scope in group.routes:
        app.route(path, method, middlewares=needs(scope))(binding.placeholder(method, path))


def bind(route: Route | None) -> None:
    """Give a placeholder route its module's handler and declared options (once; cheap after)."""
    binding = getattr(getattr(route, "func", None), "_lazy", None)
    if route is None or binding is None:
        return
    handlers = binding.load()
    key = (route.method, route.path)
    if key not in handlers:  # HEAD beside a lazy GET (routes._add_head_routes): the handler only
        route.func = handlers[("GET", route.path)][0]
        return
    func, options = handlers[key]
    scratch = _scratch_route(route.path, route.method, func, options)
    route.__dict__.update({k: v for k, v in scratch.__dict__.items() if k not in _KEEP})


def bind_all(routes: list[Route]) -> None:
    for route in routes:
        bind(route)


def _scratch_route(path: str, method: str, func: Callable[..., Any], options: dict[str, Any]) -> Route:
    """The Route Powertools builds from these decorator arguments (on a throwaway resolver, so
    every attribute is computed as the app's own registration computes it)."""
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    scratch = APIGatewayRestResolver(enable_validation=True)
    scratch.route(path, method, **options)(func)
    return [*scratch._static_routes, *scratch._dynamic_routes][0]  # noqa: SLF001


# The lazy groups, each in its module's order (api/templates.py, api/webhooks.py).
TEMPLATES = LazyGroup("outpost.api.templates", "add_template_routes", (
    ("POST", "/v1/templates", "admin"),
    ("GET", "/v1/templates", "read"),
    ("GET", "/v1/templates/<alias>", "read"),
    ("PUT", "/v1/templates/<alias>", "admin"),
    ("DELETE", "/v1/templates/<alias>", "admin"),
    ("POST", "/v1/templates/<alias>/render", "read"),
))
WEBHOOKS = LazyGroup("outpost.api.webhooks", "add_webhook_routes", (
    ("POST", "/v1/webhooks", "admin"),
    ("GET", "/v1/webhooks", "admin"),
    ("GET", "/v1/webhooks/<webhook_id>", "admin"),
    ("DELETE", "/v1/webhooks/<webhook_id>", "admin"),
    ("POST", "/v1/webhooks/<webhook_id>/rotate", "admin"),
    ("POST", "/v1/webhooks/<webhook_id>/replay", "admin"),
    ("POST", "/v1/webhooks/<webhook_id>/enable", "admin"),
))
