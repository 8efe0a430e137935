"""HTTP routes (Powertools' REST resolver): authenticate, validate, call the service, answer.

Authentication is middleware: a gate before validation refuses a missing or unknown API key
(401) for every route but PUBLIC_PATHS, and each route names its scope (`needs("send")`), whose
middleware checks it (403), throttles the key (429) and hands the route its Principal through
the resolver's context.

Every error has one JSON shape, `{"error": {"code", "message", "field"}}`, and no input can
produce a 500: validation errors are 422 naming the field, malformed JSON is 400, unknown
routes 404, throttling 429 with Retry-After, and anything unexpected is logged and answered 503
(retryable) without a trace. The OpenAPI document (/openapi.json) is generated from the same
pydantic models that validate requests and responses (models.py).

Cold start (issue 15): building the app imports only what the common request needs. Routes are
registered eagerly (routing, 404 and 405 need the whole table) but cost little: Powertools builds
a route's validation models on its first request. A route module whose service is heavy to import
or build (domains: dnspython) is lazy in two steps: here, import its service's type under
TYPE_CHECKING only (and its pydantic models from models.py, which defer their schema builds);
in bootstrap.api_app, pass `lazy(builder)`, where the builder imports the module. A new route
module (webhooks, templates) goes further: its table in api/lazy_routes.py registers its routes
here and the module is imported on the first request that reaches one (`add_lazy_routes`), with
`webhooks=lazy(webhook_api)` in bootstrap. tests/unit/test_cold_start.py lists what must stay unloaded.
Powertools' event_handler and data_classes packages are imported name by name (api/__init__.py,
lazy_imports.py), and a pydantic model of a route module sets defer_build (init builds none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import BaseMiddlewareHandler, NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from ..errors import ApiError, ForbiddenError, InvalidRequestError
from ..models import (
    BatchRequest,
    BatchResponse,
    BounceList,
    CancelResponse,
    DomainCreate,
    DomainView,
    ErrorResponse,
    MessageList,
    MessageView,
    ReputationItem,
    ReputationList,
    SendRequest,
    SendResponse,
    SuppressionList,
    SuppressionPut,
    SuppressionRemoved,
    SuppressionView,
    UploadRequest,
    UploadResponse,
)
from .auth import SCOPES, KeyRing, Principal, ThrottledError
from .contract import ADDRESS, DOMAIN, declare
from .events import EventList, EventsApi
from .jsonbody import loads_body
from .lazy_routes import TEMPLATES, WEBHOOKS, add_lazy_routes, bind, bind_all
from .service import QueryService, SendService

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.api_gateway import Route
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

    from ..templates.service import TemplateService
    from ..webhooks.service import WebhookService
    from .domains import DomainService
    from .reputation import ReputationApi

log = logging.getLogger("outpost.api")

_ERR = {"application/json": {"model": ErrorResponse}}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _errors(*codes: int, ok: int = 200, ok_text: str = "OK") -> dict[int, Any]:
    text = {400: "Malformed request (e.g. the body is not JSON, a bad cursor)",
            401: "Missing, invalid or revoked API key", 403: "The key lacks the scope, the "
            "sender domain is not verified, or sending is paused (sending_paused)", 404: "Not found", 409: "Conflict",
            413: "The message is over 40 MB", 415: "The body is not application/json",
            422: "Validation failed (the field is named)",
            429: "Too many requests for this key", 503: "Temporarily unavailable; retry"}
    out: dict[int, Any] = {ok: {"description": ok_text}}
    for c in (400, 401, 422, 429, 503, *codes):
        out[c] = {"description": text[c], "content": _ERR}
        if c in (429, 503):
            out[c]["headers"] = _RETRY
    return out


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json",
                    body={"error": {"code": code, "message": message, "field": field}}, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts: list[str] = []
    for p in loc:
        if p in ("body", "query", "path", "header") and not parts:
            continue
        if isinstance(p, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{p}]"
            continue
        if str(p).startswith("function-"):
            continue
        parts.append("from" if p == "from_" else str(p))
    return ".".join(parts) or None


# What the document declares for path and query parameters (issue 8, item 23). Cursors and
# message ids have one fixed alphabet, enforced here. Addresses and domains are declared by
# their plain ASCII form (contract.py): everything that matches is accepted; the parser also
# accepts forms no simple pattern describes (IDN, quoted local parts), so their patterns are
# declared (json_schema_extra), not enforced, and the rest is a 422 from the parser.
_ADDRESS_DOC = {k: ADDRESS[k] for k in ("pattern", "format", "example")}
_DOMAIN_DOC = {k: DOMAIN[k] for k in ("pattern", "format", "example")}
Address = Annotated[str, Path(min_length=3, max_length=254, json_schema_extra=_ADDRESS_DOC,
                              description="an email address (an internationalised one is accepted too)")]
Domain = Annotated[str, Path(min_length=3, max_length=253, json_schema_extra=_DOMAIN_DOC,
                             description="a domain name (an IDN is accepted too)")]
MessageId = Annotated[str, Path(min_length=26, max_length=26, pattern=r"^[0-9a-hjkmnp-tv-z]{26}$",
                                description="the id POST /v1/messages answered")]
RecipientQ = Annotated[str | None, Query(min_length=3, max_length=254, json_schema_extra=_ADDRESS_DOC,
                                         description="only this recipient")]
Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
CursorQ = Annotated[str | None, Query(max_length=2048, pattern=r"^[A-Za-z0-9_-]*$", description=(
    "next_cursor of the previous page, as given, with the same query; any other value is a 400 "
    "naming `cursor`. A page may hold fewer items than `limit`, even none, and still have a "
    "next_cursor (each request reads a bounded part of the index): follow it until it is null"))]
# RFC 3339 date-time (JSON Schema's `date-time`), enforced as declared: pydantic's lax datetime
# would also take a number ("0.5" as seconds since 1970), which the document does not allow.
SINCE_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                 r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
Since = Annotated[str | None, Query(max_length=40, pattern=SINCE_PATTERN, json_schema_extra={
    "format": "date-time"}, description="RFC 3339; only items at or after this time")]


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"since: {value!r} is not an RFC 3339 date-time", field="since") from None
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                        pattern=r"^[\x21-\x7e]+$",
                                        description="repeat a request safely for 24 h")]
States = Literal["queued", "deferred", "delivered", "bounced", "expired", "suppressed", "complained",
                 "scheduled", "canceled"]
Kinds = Literal["hard", "soft", "undetermined", "complaint", "delay"]
Sources = Literal["bounce", "complaint", "manual"]




# Served without an API key. Every other route, and any path under /v1/ that matches none (so an
# anonymous caller cannot map which /v1/ paths exist), needs a key: the gate denies by default.
PUBLIC_PATHS = frozenset({"/openapi.json"})


def build_app(*, keys: KeyRing, sender: SendService, queries: QueryService,
              domains: DomainService | None = None,
              reputation: ReputationApi | None = None,
              events: EventsApi | None = None,
              webhooks: WebhookService | None = None,
              templates: TemplateService | None = None) -> APIGatewayRestResolver:
    """The resolver: error handlers, the routes by resource (each naming the scope it needs),
    HEAD beside every GET, and the gate every request meets first."""
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=loads_body)  # api/jsonbody.py
    needs = Scopes(keys)
    _add_error_handlers(app)
    _add_message_routes(app, needs, sender, queries)
    _add_upload_routes(app, needs, sender)
    _add_bounce_routes(app, needs, queries)
    _add_suppression_routes(app, needs, queries)
    if domains is not None:
        _add_domain_routes(app, needs, domains)
    if reputation is not None:
        _add_reputation_routes(app, needs, reputation)
    if events is not None:
        _add_event_routes(app, needs, events)
    if webhooks is not None:  # api/webhooks.py, imported on first use (api/lazy_routes.py)
        add_lazy_routes(app, needs, webhooks, WEBHOOKS)
    if templates is not None:  # issue 14 (api/templates.py), the same
        add_lazy_routes(app, needs, templates, TEMPLATES)
    _add_document_route(app)
    _add_head_routes(app)
    # Powertools puts its request validation first in every route's middleware stack, before
    # middlewares given with `use` or per route (api_gateway.py, Route._build_middleware_stack).
    # The gate must come before it, so that an anonymous caller learns nothing about the schema
    # and cannot make us validate 500 items: it takes the validation's slot and runs the
    # validation itself, after its own checks (tests/unit/test_api_auth.py holds the order).
    if not isinstance(getattr(app, "_request_validation_middleware", None), OpenAPIRequestValidationMiddleware):
        raise RuntimeError("Powertools no longer keeps its request validation where the gate expects it")
    app._request_validation_middleware = Gate(keys)  # noqa: SLF001
    return app


# ---- authentication and the answers that come before validation ---------------------------------
def routes_of(app: APIGatewayRestResolver) -> list[Route]:
    """Every route the app serves (Powertools keeps them in these two lists)."""
    return [*app._static_routes, *app._dynamic_routes]  # noqa: SLF001


def principal_of(app: APIGatewayRestResolver) -> Principal:
    """The caller, as the route's Requires middleware put it in the resolver's context."""
    principal = app.context.get("principal")
    if not isinstance(principal, Principal):  # a route without Requires: refuse, never serve
        raise ForbiddenError("this route names no scope", field="Authorization")
    return principal


class Requires(BaseMiddlewareHandler):
    """A route's scope: the caller's key must hold it (403), within its rate (429); the
    Principal then reaches the route through the resolver's context. It runs after validation
    (the gate has already refused a missing or unknown key): a request that is both invalid and
    out of scope is told what is invalid."""

    def __init__(self, keys: KeyRing, scope: str) -> None:
        self.keys, self.scope = keys, scope

    def handler(self, app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
        principal = self.keys.authenticate(app.current_event.headers.get("Authorization"), self.scope)
        app.append_context(principal=principal)
        return next_middleware(app)


class Scopes:
    """`needs("send")`: the Requires middleware for one scope, built once per scope."""

    def __init__(self, keys: KeyRing) -> None:
        # "any": a valid key with whatever scope (GET /v1/reputation shows each key its own)
        self._by_scope = {scope: Requires(keys, scope) for scope in (*SCOPES, "any")}

    def __call__(self, scope: str) -> list[Callable[..., Any]]:
        return [self._by_scope[scope]]


class Gate(OpenAPIRequestValidationMiddleware):
    """What every request meets first, in this order: the API key (401), the method (405 with
    Allow; OPTIONS answered with Allow alone), the media type (415); then Powertools' request
    validation, and HEAD is served as GET without the body (RFC 9110 §9.3.2)."""

    def __init__(self, keys: KeyRing) -> None:
        super().__init__()
        self.keys = keys

    def handler(self, app: APIGatewayRestResolver,  # type: ignore[override]  # the one resolver here
                next_middleware: NextMiddleware) -> Response:
        event = app.current_event
        method, path = event.http_method.upper(), event.path
        if needs_key(app, app.context.get("_route"), path):
            self.keys.identify(event.headers.get("Authorization"))
        refused = answer_method(app, method, path) or answer_media_type(event)
        if refused is not None:
            return refused
        bind(app.context.get("_route"))  # a lazy route module's handler, before validation
        if method != "HEAD":
            return super().handler(app, next_middleware)
        try:
            response = super().handler(app, next_middleware)
        except Exception as exc:  # answered as for GET, then without the body
            handle = app.exception_handler_manager.lookup_exception_handler(type(exc))
            if handle is None:
                raise
            response = handle(exc)
        response.body = ""
        return response


def needs_key(app: APIGatewayRestResolver, route: Route | None, path: str) -> bool:
    if route is not None and any(route is r for r in routes_of(app)):
        return route.path not in PUBLIC_PATHS
    return path.startswith("/v1/")  # no route: a 404 under /v1/ is for key holders only


def allowed_methods(app: APIGatewayRestResolver, path: str) -> list[str]:
    """The methods served at `path`. A literal path is its own resource (/v1/messages/batch is
    not a message id); the route table is the decorators'."""
    static = [r for r in app._static_routes if r.rule.match(path)]  # noqa: SLF001
    routes = static or [r for r in app._dynamic_routes if r.rule.match(path)]  # noqa: SLF001
    return sorted({r.method for r in routes})


def answer_method(app: APIGatewayRestResolver, method: str, path: str) -> Response | None:
    """405 with Allow (RFC 9110 §15.5.6) in the one error shape for a path we serve with other
    methods; OPTIONS gets the Allow header alone. Every method of every path reaches the
    function (the template routes ANY /{proxy+}; the local server passes every method
    through), so the answer is the same locally and in AWS."""
    allowed = allowed_methods(app, path)
    if not allowed or method in allowed:
        return None
    allow = ", ".join([*allowed, "OPTIONS"])
    if method == "OPTIONS":
        return Response(status_code=204, content_type=None, body="", headers={"Allow": allow})
    return _error(405, "method_not_allowed", f"{method} is not allowed here; use {', '.join(allowed)}",
                  headers={"Allow": allow})


def answer_media_type(event: BaseProxyEvent) -> Response | None:
    """415 for a body that is not JSON (RFC 9110 §15.5.16): Powertools would parse form or
    multipart data, or fail on it; this API reads only JSON. No Content-Type is taken as JSON."""
    if not event.body:
        return None
    media = str(event.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return None
    return _error(415, "unsupported_media_type", "send the body as application/json", "Content-Type")


def _add_head_routes(app: APIGatewayRestResolver) -> None:
    """HEAD beside every GET, undocumented as Powertools leaves it; the gate drops the body."""
    for route in [r for r in routes_of(app) if r.method == "GET"]:
        app.head(route.path, include_in_schema=False, middlewares=route.middlewares)(route.func)


# ---- errors: one JSON shape -----------------------------------------------------------------------
def _add_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(ThrottledError)
    def _throttled(exc: ThrottledError) -> Response:
        return _error(429, exc.code, exc.message, exc.field, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(InvalidRequestError)
    def _failed(exc: InvalidRequestError) -> Response:
        return _error(400 if exc.field == "cursor" else 422, exc.code, exc.message, exc.field)

    @app.exception_handler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {}
        if err.get("type") == "json_invalid":
            return _error(400, "invalid_json", "the request body is not valid JSON", "body")
        msg = str(err.get("msg", "invalid request"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        field = _field_of(tuple(err.get("loc", ())))
        if err.get("type") == "missing" and field:
            msg = f"{field} is required"
        return _error(422, "validation_error", msg, field)

    @app.exception_handler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # json.loads recurses once per nesting level: "[" * 1000 is a RecursionError, which
        # is the client's malformed body, not our trouble (503 would invite a retry).
        return _error(400, "invalid_json", "the request body nests too deeply", "body")

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response:
        # API Gateway base64-encodes a body that is not UTF-8; JSON must be UTF-8 (RFC 8259 §8.1).
        return _error(400, "invalid_json", "the request body is not UTF-8 JSON", "body")

    @app.exception_handler(RequestUnsupportedContentType)
    def _media_type(exc: RequestUnsupportedContentType) -> Response:
        return _error(415, "unsupported_media_type", "send the body as application/json",
                      "Content-Type")

    @app.not_found
    def _not_found(exc: Exception) -> Response:
        return _error(404, "not_found", "no such route")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(503, "temporarily_unavailable", "the request could not be completed; retry",
                      headers={"Retry-After": "1"})


# ---- messages -------------------------------------------------------------------------------------
def _add_message_routes(app: APIGatewayRestResolver, needs: Scopes, sender: SendService,
                        queries: QueryService) -> None:
    @app.post("/v1/messages", summary="Send a message", status_code=202, middlewares=needs("send"),
              responses=_errors(403, 409, 413, 415, ok=202, ok_text="Accepted: queued or suppressed"))
    def send_message(body: Annotated[SendRequest, Body()],
                     idempotency_key: IdemKey = None) -> Response[SendResponse]:
        out, replayed = sender.send(body, principal=principal_of(app), idempotency_key=idempotency_key,
                                    raw=app.current_event.json_body, context=app.lambda_context)
        return Response(status_code=202, content_type="application/json", body=SendResponse(**out),
                        headers={"Idempotent-Replayed": "true"} if replayed else None)

    @app.post("/v1/messages/batch", summary="Send up to 500 messages, each answered on its own",
              middlewares=needs("send"), responses=_errors(409, 415))
    def send_batch(body: Annotated[BatchRequest, Body()],
                   idempotency_key: IdemKey = None) -> Response[BatchResponse]:
        out, replayed = sender.send_batch(body.messages, principal=principal_of(app),
                                          idempotency_key=idempotency_key, context=app.lambda_context)
        return Response(status_code=200, content_type="application/json", body=BatchResponse(**out),
                        headers={"Idempotent-Replayed": "true"} if replayed else None)

    @app.get("/v1/messages", summary="Messages by recipient, status and time (per recipient)",
             middlewares=needs("read"), responses=_errors(400, 403))
    def list_messages(recipient: RecipientQ = None,
                      status: Annotated[States | None, Query()] = None,
                      since: Since = None, limit: Limit = 50, cursor: CursorQ = None) -> MessageList:
        return MessageList.model_validate(queries.messages(
            recipient=recipient, status=status, since=_since(since), limit=limit, cursor=cursor))

    @app.get("/v1/messages/<message_id>", summary="A message with each recipient's state and attempts",
             middlewares=needs("read"), responses=_errors(403, 404))
    def get_message(message_id: MessageId) -> MessageView:
        return MessageView.model_validate(queries.message(message_id))

    @app.post("/v1/messages/<message_id>/cancel", summary="Cancel the recipients that are scheduled, "
              "queued or deferred (one in an SMTP transaction finishes it)", middlewares=needs("send"),
              responses=_errors(403, 404, 415, ok_text="Each recipient's status after the cancel "
                                "(200 also when nothing was left to cancel)"))
    def cancel_message(message_id: MessageId) -> CancelResponse:
        return CancelResponse.model_validate(sender.cancel(message_id, principal_of(app)))


# ---- uploads --------------------------------------------------------------------------------------
def _add_upload_routes(app: APIGatewayRestResolver, needs: Scopes, sender: SendService) -> None:
    @app.post("/v1/uploads", summary="A presigned URL to PUT one large attachment to (then send "
              "with its upload_id)", status_code=201, middlewares=needs("send"),
              responses=_errors(403, 413, 415, ok=201, ok_text="Created: PUT the bytes to `url` (429: "
                                "this key's uploads for today are used up)"))
    def create_upload(body: Annotated[UploadRequest, Body()]) -> Response[UploadResponse]:
        return Response(status_code=201, content_type="application/json",
                        body=UploadResponse(**sender.create_upload(body, principal_of(app))))


# ---- bounces --------------------------------------------------------------------------------------
def _add_bounce_routes(app: APIGatewayRestResolver, needs: Scopes, queries: QueryService) -> None:
    @app.get("/v1/bounces", summary="Bounces and complaints by recipient, kind and time",
             middlewares=needs("read"), responses=_errors(400, 403))
    def list_bounces(recipient: RecipientQ = None,
                     kind: Annotated[Kinds | None, Query()] = None,
                     since: Since = None, limit: Limit = 50, cursor: CursorQ = None) -> BounceList:
        return BounceList.model_validate(queries.bounces(
            recipient=recipient, kind=kind, since=_since(since), limit=limit, cursor=cursor))


# ---- suppressions ---------------------------------------------------------------------------------
def _add_suppression_routes(app: APIGatewayRestResolver, needs: Scopes, queries: QueryService) -> None:
    @app.get("/v1/suppressions", summary="The suppression list, by source and time",
             middlewares=needs("read"), responses=_errors(400, 403))
    def list_suppressions(source: Annotated[Sources | None, Query()] = None, since: Since = None,
                          limit: Limit = 50, cursor: CursorQ = None) -> SuppressionList:
        return SuppressionList.model_validate(queries.suppression_list(
            source=source, since=_since(since), limit=limit, cursor=cursor))

    @app.get("/v1/suppressions/<address>", summary="Whether an address is suppressed, why, and its history",
             middlewares=needs("read"), responses=_errors(403, 404))
    def get_suppression(address: Address) -> SuppressionView:
        return SuppressionView.model_validate(queries.suppression(unquote(address)))

    @app.put("/v1/suppressions/<address>", summary="Suppress an address by hand", middlewares=needs("send"),
             responses={**_errors(403, 415, ok=200, ok_text="Already suppressed"),
                        201: {"description": "Suppressed now"}})
    def put_suppression(address: Address,
                        body: Annotated[SuppressionPut | None, Body()] = None) -> Response[SuppressionView]:
        if app.current_event.body and not isinstance(app.current_event.json_body, dict | None):
            raise InvalidRequestError("the body is a JSON object ({\"reason\": ...}) or empty", field="body")
        item, new = queries.suppress(unquote(address), (body or SuppressionPut()).reason, principal_of(app))
        return Response(status_code=201 if new else 200, content_type="application/json",
                        body=SuppressionView(**item))

    @app.delete("/v1/suppressions/<address>", summary="Remove a suppression (admin; recorded)",
                middlewares=needs("admin"), responses=_errors(403, 404))
    def delete_suppression(address: Address) -> SuppressionRemoved:
        return SuppressionRemoved.model_validate(queries.unsuppress(unquote(address), principal_of(app)))


# ---- domains --------------------------------------------------------------------------------------
def _add_domain_routes(app: APIGatewayRestResolver, needs: Scopes, domains: DomainService) -> None:
    @app.post("/v1/domains", summary="Add a sending domain: DKIM keys and the DNS records to publish",
              status_code=201, middlewares=needs("admin"),
              responses=_errors(403, 409, 415, ok=201, ok_text="Created"))
    def create_domain(body: Annotated[DomainCreate, Body()]) -> Response[DomainView]:
        return Response(status_code=201, content_type="application/json",
                        body=DomainView.model_validate(domains.create(body.domain, mta_sts=body.mta_sts)))

    @app.get("/v1/domains/<domain>", summary="Check the domain's records live in DNS (changes nothing)",
             middlewares=needs("read"), responses=_errors(403, 404))
    def get_domain(domain: Domain) -> DomainView:
        return DomainView.model_validate(domains.check(unquote(domain)))

    @app.post("/v1/domains/<domain>/verify", summary="Check the records and act: verify the "
              "domain, start signing with verified new keys, retire old ones (admin; also "
              "done hourly by the scheduled check)", middlewares=needs("admin"),
              responses=_errors(403, 404))
    def verify_domain(domain: Domain) -> DomainView:
        return DomainView.model_validate(domains.verify(unquote(domain)))

    @app.post("/v1/domains/<domain>/rotate", summary="Rotate the DKIM keys (new selectors)",
              middlewares=needs("admin"), responses=_errors(403, 404, 409))
    def rotate_domain(domain: Domain) -> DomainView:
        return DomainView.model_validate(domains.rotate(unquote(domain)))


# ---- reputation (issue 11 item 6) -----------------------------------------------------------------
KeyId = Annotated[str, Path(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$",
                            description="an API key's id (key_id)")]


def _add_reputation_routes(app: APIGatewayRestResolver, needs: Scopes, reputation: ReputationApi) -> None:
    @app.get("/v1/reputation", summary="Bounce and complaint rates (24 h, 7 d) and the circuit "
             "breaker's state per sending domain and API key (an admin sees all; other keys their "
             "own key and domains)", middlewares=needs("any"), responses=_errors(403))
    def get_reputation() -> ReputationList:
        return ReputationList.model_validate(reputation.list(principal_of(app)))

    @app.post("/v1/reputation/<domain>/resume", summary="Resume a paused sending domain (admin; "
              "recorded); its held mail then goes out", middlewares=needs("admin"),
              responses=_errors(403, 404, 409))
    def resume_domain(domain: Domain) -> ReputationItem:
        return ReputationItem.model_validate(reputation.resume_domain(unquote(domain), principal_of(app)))

    @app.post("/v1/reputation/keys/<key_id>/resume", summary="Resume a paused API key (admin; "
              "recorded); its held mail then goes out", middlewares=needs("admin"),
              responses=_errors(403, 404, 409))
    def resume_key(key_id: KeyId) -> ReputationItem:
        return ReputationItem.model_validate(reputation.resume_key(key_id, principal_of(app)))


# ---- events (issue 12) ----------------------------------------------------------------------------
EventTypes = Literal["message.queued", "message.deferred", "message.delivered", "message.bounced",
                     "message.expired", "message.suppressed", "message.complained",
                     "message.scheduled", "message.canceled"]  # events.EVENT_TYPES
MessageIdQ = Annotated[str | None, Query(min_length=26, max_length=26, pattern=r"^[0-9a-hjkmnp-tv-z]{26}$",
                                         description="only this message's events")]


def _add_event_routes(app: APIGatewayRestResolver, needs: Scopes, events: EventsApi) -> None:
    @app.get("/v1/events", summary="The event log: one event per recipient state change, newest first",
             middlewares=needs("read"), responses=_errors(400, 403))
    def list_events(type: Annotated[EventTypes | None, Query()] = None, message_id: MessageIdQ = None,
                    since: Since = None, limit: Limit = 50, cursor: CursorQ = None) -> EventList:
        return EventList.model_validate(events.list(type=type, message_id=message_id, since=_since(since),
                                                    limit=limit, cursor=cursor))


# ---- the document (public) ------------------------------------------------------------------------
def _add_document_route(app: APIGatewayRestResolver) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        # Powertools' OpenAPI models build ~200 pydantic schemas at import: only this route needs them
        from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

        bind_all(routes_of(app))  # every lazy route module (api/lazy_routes.py)
        return declare(app.get_openapi_schema(
            title="Outpost", version="1", description="Serverless transactional email",
            security_schemes={"bearer": HTTPBearer(scheme="bearer", bearerFormat="op_...")},
            security=[{"bearer": []}]).model_dump(mode="json", by_alias=True, exclude_none=True))
