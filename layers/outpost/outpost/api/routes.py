"""HTTP routes (Powertools' REST resolver): authenticate, validate, call the service, answer.

Every error has one JSON shape, `{"error": {"code", "message", "field"}}`, and no input can
produce a 500: validation errors are 422 naming the field, malformed JSON is 400, unknown
routes 404, and anything unexpected is logged and answered 503 (retryable) without a trace.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from ..errors import ApiError
from ..models import SendRequest
from .auth import KeyRing
from .service import QueryService, SendService

log = logging.getLogger("outpost.api")


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json",
                    body={"error": {"code": code, "message": message, "field": field}}, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts: list[str] = []
    for p in loc:
        if p == "body" and not parts:
            continue
        if isinstance(p, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{p}]"
            continue
        if str(p).startswith("function-"):
            continue
        parts.append("from" if p == "from_" else str(p))
    return ".".join(parts) or None


def build_app(*, keys: KeyRing, sender: SendService, queries: QueryService) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)

    def auth(scope: str) -> None:
        keys.authenticate(app.current_event.headers.get("Authorization")
                          or app.current_event.headers.get("authorization"), scope)

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

    @app.not_found
    def _not_found(exc: Exception) -> Response:
        return _error(404, "not_found", "no such route")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(503, "temporarily_unavailable", "the request could not be completed; retry",
                      headers={"Retry-After": "1"})

    @app.post("/v1/messages", summary="Send a message", status_code=202)
    def send_message(body: Annotated[SendRequest, Body()]) -> Response[dict]:
        auth("send")
        return Response(status_code=202, content_type="application/json", body=sender.send(body))

    @app.get("/v1/messages/<message_id>", summary="A message with each recipient's state and attempts")
    def get_message(message_id: Annotated[str, Path()]) -> dict:
        auth("read")
        return queries.message(message_id)

    @app.get("/v1/suppressions/<address>", summary="Whether an address is suppressed, and why")
    def get_suppression(address: Annotated[str, Path()]) -> dict:
        auth("read")
        return queries.suppression(address)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.get_openapi_schema(title="Outpost", version="1").model_dump(
            mode="json", by_alias=True, exclude_none=True)

    return app
