"""HTTP routes (Powertools' REST resolver): authenticate, validate, call the service, answer.

Every error has one JSON shape, `{"error": {"code", "message", "field"}}`, and no input can
produce a 500: validation errors are 422 naming the field, malformed JSON is 400, unknown
routes 404, throttling 429 with Retry-After, and anything unexpected is logged and answered 503
(retryable) without a trace. The OpenAPI document (/openapi.json) is generated from the same
pydantic models that validate requests and responses (models.py).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from ..errors import ApiError, Unauthorized, ValidationFailed
from ..models import (
    BatchRequest,
    BatchResponse,
    BounceList,
    DomainCreate,
    DomainView,
    ErrorResponse,
    MessageList,
    MessageView,
    SendRequest,
    SendResponse,
    SuppressionList,
    SuppressionPut,
    SuppressionRemoved,
    SuppressionView,
    UploadRequest,
    UploadResponse,
)
from .auth import KeyRing, Principal, Throttled
from .contract import ADDRESS, DOMAIN, declare
from .service import QueryService, SendService

log = logging.getLogger("outpost.api")

_ERR = {"application/json": {"model": ErrorResponse}}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _errors(*codes: int, ok: int = 200, ok_text: str = "OK") -> dict[int, Any]:
    text = {400: "Malformed request (e.g. the body is not JSON, a bad cursor)",
            401: "Missing, invalid or revoked API key", 403: "The key lacks the scope, or the "
            "sender domain is not verified", 404: "Not found", 409: "Conflict",
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
        raise ValidationFailed(f"since: {value!r} is not an RFC 3339 date-time", field="since") from None
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                        pattern=r"^[\x21-\x7e]+$",
                                        description="repeat a request safely for 24 h")]
States = Literal["queued", "deferred", "delivered", "bounced", "expired", "suppressed", "complained"]
Kinds = Literal["hard", "soft", "undetermined", "complaint", "delay"]
Sources = Literal["bounce", "complaint", "manual"]


def build_app(*, keys: KeyRing, sender: SendService, queries: QueryService,
              domains: Any = None) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)

    def auth(scope: str) -> Principal:
        h = app.current_event.headers or {}
        return keys.authenticate(h.get("Authorization") or h.get("authorization"), scope)

    @app.exception_handler(Throttled)
    def _throttled(exc: Throttled) -> Response:
        return _error(429, exc.code, exc.message, exc.field, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ValidationFailed)
    def _failed(exc: ValidationFailed) -> Response:
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

    # ---- sending ------------------------------------------------------------------------------
    @app.post("/v1/messages", summary="Send a message", status_code=202,
              responses=_errors(403, 409, 413, 415, ok=202, ok_text="Accepted: queued or suppressed"))
    def send_message(body: Annotated[SendRequest, Body()],
                     idempotency_key: IdemKey = None) -> Response[SendResponse]:
        principal = auth("send")
        sender.register_context(app.lambda_context)
        out, replayed = sender.send(body, principal=principal, idempotency_key=idempotency_key,
                                    raw=app.current_event.json_body)
        return Response(status_code=202, content_type="application/json", body=SendResponse(**out),
                        headers={"Idempotent-Replayed": "true"} if replayed else None)

    @app.post("/v1/messages/batch", summary="Send up to 500 messages, each answered on its own",
              responses=_errors(409, 415))
    def send_batch(body: Annotated[BatchRequest, Body()],
                   idempotency_key: IdemKey = None) -> Response[BatchResponse]:
        principal = auth("send")
        sender.register_context(app.lambda_context)
        out, replayed = sender.send_batch(body.messages, principal=principal,
                                          idempotency_key=idempotency_key)
        return Response(status_code=200, content_type="application/json", body=BatchResponse(**out),
                        headers={"Idempotent-Replayed": "true"} if replayed else None)

    @app.post("/v1/uploads", summary="A presigned URL to PUT one large attachment to (then send "
              "with its upload_id)", status_code=201,
              responses=_errors(403, 413, 415, ok=201, ok_text="Created: PUT the bytes to `url` (429: "
                                "this key's uploads for today are used up)"))
    def create_upload(body: Annotated[UploadRequest, Body()]) -> Response[UploadResponse]:
        principal = auth("send")
        return Response(status_code=201, content_type="application/json",
                        body=UploadResponse(**sender.create_upload(body, principal)))

    # ---- querying -----------------------------------------------------------------------------
    @app.get("/v1/messages", summary="Messages by recipient, status and time (per recipient)",
             responses=_errors(400, 403))
    def list_messages(recipient: RecipientQ = None,
                      status: Annotated[States | None, Query()] = None,
                      since: Since = None, limit: Limit = 50, cursor: CursorQ = None) -> MessageList:
        auth("read")
        return MessageList.model_validate(queries.messages(
            recipient=recipient, status=status, since=_since(since), limit=limit, cursor=cursor))

    @app.get("/v1/messages/<message_id>", summary="A message with each recipient's state and attempts",
             responses=_errors(403, 404))
    def get_message(message_id: MessageId) -> MessageView:
        auth("read")
        return MessageView.model_validate(queries.message(message_id))

    @app.get("/v1/bounces", summary="Bounces and complaints by recipient, kind and time",
             responses=_errors(400, 403))
    def list_bounces(recipient: RecipientQ = None,
                     kind: Annotated[Kinds | None, Query()] = None,
                     since: Since = None, limit: Limit = 50, cursor: CursorQ = None) -> BounceList:
        auth("read")
        return BounceList.model_validate(queries.bounces(
            recipient=recipient, kind=kind, since=_since(since), limit=limit, cursor=cursor))

    @app.get("/v1/suppressions", summary="The suppression list, by source and time",
             responses=_errors(400, 403))
    def list_suppressions(source: Annotated[Sources | None, Query()] = None, since: Since = None,
                          limit: Limit = 50, cursor: CursorQ = None) -> SuppressionList:
        auth("read")
        return SuppressionList.model_validate(queries.suppression_list(
            source=source, since=_since(since), limit=limit, cursor=cursor))

    @app.get("/v1/suppressions/<address>", summary="Whether an address is suppressed, why, and its history",
             responses=_errors(403, 404))
    def get_suppression(address: Address) -> SuppressionView:
        auth("read")
        return SuppressionView.model_validate(queries.suppression(unquote(address)))

    @app.put("/v1/suppressions/<address>", summary="Suppress an address by hand",
             responses={**_errors(403, 415, ok=200, ok_text="Already suppressed"),
                        201: {"description": "Suppressed now"}})
    def put_suppression(address: Address,
                        body: Annotated[SuppressionPut | None, Body()] = None) -> Response[SuppressionView]:
        principal = auth("send")
        if app.current_event.body and not isinstance(app.current_event.json_body, dict | None):
            raise ValidationFailed("the body is a JSON object ({\"reason\": ...}) or empty", field="body")
        item, new = queries.suppress(unquote(address), (body or SuppressionPut()).reason, principal)
        return Response(status_code=201 if new else 200, content_type="application/json",
                        body=SuppressionView(**item))

    @app.delete("/v1/suppressions/<address>", summary="Remove a suppression (admin; recorded)",
                responses=_errors(403, 404))
    def delete_suppression(address: Address) -> SuppressionRemoved:
        principal = auth("admin")
        return SuppressionRemoved.model_validate(queries.unsuppress(unquote(address), principal))

    # ---- domains ------------------------------------------------------------------------------
    if domains is not None:
        @app.post("/v1/domains", summary="Add a sending domain: DKIM keys and the DNS records to publish",
                  status_code=201, responses=_errors(403, 409, 415, ok=201, ok_text="Created"))
        def create_domain(body: Annotated[DomainCreate, Body()]) -> Response[DomainView]:
            auth("admin")
            return Response(status_code=201, content_type="application/json",
                            body=domains.create(body.domain, mta_sts=body.mta_sts))

        @app.get("/v1/domains/<domain>", summary="Check the domain's records live in DNS (changes nothing)",
                 responses=_errors(403, 404))
        def get_domain(domain: Domain) -> DomainView:
            auth("read")
            return DomainView.model_validate(domains.check(unquote(domain)))

        @app.post("/v1/domains/<domain>/verify", summary="Check the records and act: verify the "
                  "domain, start signing with verified new keys, retire old ones (admin; also "
                  "done hourly by the scheduled check)", responses=_errors(403, 404))
        def verify_domain(domain: Domain) -> DomainView:
            auth("admin")
            return DomainView.model_validate(domains.verify(unquote(domain)))

        @app.post("/v1/domains/<domain>/rotate", summary="Rotate the DKIM keys (new selectors)",
                  responses=_errors(403, 404, 409))
        def rotate_domain(domain: Domain) -> DomainView:
            auth("admin")
            return DomainView.model_validate(domains.rotate(unquote(domain)))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return declare(app.get_openapi_schema(
            title="Outpost", version="1", description="Serverless transactional email",
            security_schemes={"bearer": HTTPBearer(scheme="bearer", bearerFormat="op_...")},
            security=[{"bearer": []}]).model_dump(mode="json", by_alias=True, exclude_none=True))

    def allowed_methods(path: str) -> list[str]:
        """The methods served at `path` (HEAD with GET). A literal path is its own resource
        (/v1/messages/batch is not a message id). Powertools keeps its routes in these two
        lists; reading them keeps one table of routes: the decorators above."""
        static = [r for r in app._static_routes if r.rule.match(path)]  # noqa: SLF001
        routes = static or [r for r in app._dynamic_routes if r.rule.match(path)]  # noqa: SLF001
        methods = {r.method for r in routes}
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def answer_method(method: str, path: str) -> dict | None:
        """405 with Allow (RFC 9110 §15.5.6) in the one error shape for a path we serve with
        other methods; OPTIONS gets the Allow header alone. Every method of every path reaches
        the function (the template routes ANY /{proxy+}; the local server passes every method
        through), so the answer is the same locally and in AWS."""
        allowed = allowed_methods(path)
        if not allowed or method in allowed:
            return None
        allow = ", ".join([*allowed, "OPTIONS"])
        if method == "OPTIONS":
            return {"statusCode": 204, "headers": {"Allow": allow}, "body": "", "isBase64Encoded": False}
        return {"statusCode": 405, "headers": {"Content-Type": "application/json", "Allow": allow},
                "body": json.dumps({"error": {"code": "method_not_allowed", "field": None,
                                              "message": f"{method} is not allowed here; use "
                                                         f"{', '.join(allowed)}"}}),
                "isBase64Encoded": False}

    def answer_media_type(event: dict) -> dict | None:
        """415 for a body that is not JSON (RFC 9110 §15.5.16): Powertools would parse form or
        multipart data, or fail on it; this API reads only JSON. No Content-Type is taken as
        JSON."""
        if not event.get("body"):
            return None
        h = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        media = str(h.get("content-type") or "application/json").split(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            return None
        return {"statusCode": 415, "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": {"code": "unsupported_media_type", "field": "Content-Type",
                                              "message": "send the body as application/json"}}),
                "isBase64Encoded": False}

    # Powertools validates a request before any route code runs; authenticate first, so that
    # an anonymous caller learns nothing about the schema and cannot make us validate 500 items.
    resolve = app.resolve

    def authenticated_resolve(event: dict, context: Any) -> dict:
        if str(event.get("path") or "").startswith("/v1/"):
            h = event.get("headers") or {}
            try:
                keys.identify(h.get("Authorization") or h.get("authorization"))
            except Unauthorized as exc:
                return {"statusCode": 401, "headers": {"Content-Type": "application/json"},
                        "body": json.dumps(exc.body()), "isBase64Encoded": False}
        method, path = str(event.get("httpMethod") or "").upper(), str(event.get("path") or "")
        refused = answer_method(method, path) or answer_media_type(event)
        if refused is not None:
            return refused
        if method == "HEAD":  # HEAD is GET without the body (RFC 9110 §9.3.2)
            out = resolve(dict(event, httpMethod="GET"), context)
            return dict(out, body="", isBase64Encoded=False)
        return resolve(event, context)

    app.resolve = authenticated_resolve  # type: ignore[method-assign,assignment]
    return app
