"""Webhook routes (issue 12), all scope admin: register, list, show, delete, rotate, replay, enable.

  POST   /v1/webhooks                {"url", "events", "description"} -> 201 with the secret (once)
  GET    /v1/webhooks                the endpoints, no secrets
  GET    /v1/webhooks/{id}           one endpoint and its recent delivery attempts
  DELETE /v1/webhooks/{id}
  POST   /v1/webhooks/{id}/rotate    a new secret (once); the old one signs beside it for 24 h
  POST   /v1/webhooks/{id}/replay    {"since": RFC 3339}: its events since then, sent again
  POST   /v1/webhooks/{id}/enable    a disabled endpoint back on (then replay from missed_since)

webhooks/service.py holds the rules; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from ..events import EVENT_TYPES
from .routes import SINCE_PATTERN, Scopes, _errors, _since

if TYPE_CHECKING:
    from ..webhooks.service import WebhookService


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # built on first use (cold start)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # Declared, not enforced by pydantic: the service checks both and answers 422 naming the
    # field (`url`, `events`) in the one error shape, as the contract says.
    url: str = Field(min_length=1, max_length=2048, description="https:// (http:// to 127.0.0.0/8 locally)",
                     json_schema_extra={"pattern": "^https?://", "format": "uri"})
    events: list[Annotated[str, Field(max_length=64, json_schema_extra={"enum": list(EVENT_TYPES)})]] = Field(
        min_length=1, max_length=20)
    description: str = Field(default="", max_length=500)


class WebhookReplay(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    since: str = Field(max_length=40, pattern=SINCE_PATTERN, json_schema_extra={"format": "date-time"})


class WebhookView(_Out):
    id: str
    url: str
    events: list[str]
    description: str = ""
    enabled: bool
    created_at: str


class WebhookCreated(WebhookView):
    secret: str = Field(description="whsec_<base64>: shown only in this answer")


class WebhookList(_Out):
    items: list[WebhookView]


class WebhookDetail(WebhookView):
    deliveries: list[dict[str, Any]]


class WebhookDeleted(_Out):
    id: str
    deleted: bool


class WebhookReplayed(_Out):
    id: str
    replayed: int
    next_since: str | None = None


class WebhookEnabled(WebhookView):
    missed_since: str | None = Field(default=None, description="when it was disabled: replay from here "
                                     "for the events it missed (null: it was not disabled)")


WebhookId = Annotated[str, Path(min_length=19, max_length=19, pattern=r"^wh_[0-9a-f]{16}$",
                                description="the id POST /v1/webhooks answered")]


def add_webhook_routes(app: APIGatewayRestResolver, needs: Scopes, webhooks: WebhookService) -> None:
    @app.post("/v1/webhooks", summary="Register a webhook endpoint (admin); the signing secret is "
              "answered only here", status_code=201, middlewares=needs("admin"),
              responses=_errors(403, 415, ok=201, ok_text="Created"))
    def create_webhook(body: Annotated[WebhookCreate, Body()]) -> Response[WebhookCreated]:
        out = webhooks.create(body.url, body.events, body.description)
        return Response(status_code=201, content_type="application/json", body=WebhookCreated(**out))

    @app.get("/v1/webhooks", summary="The webhook endpoints (admin; no secrets)",
             middlewares=needs("admin"), responses=_errors(403))
    def list_webhooks() -> WebhookList:
        return WebhookList.model_validate(webhooks.list_endpoints())

    @app.get("/v1/webhooks/<webhook_id>", summary="A webhook endpoint and its recent deliveries (admin)",
             middlewares=needs("admin"), responses=_errors(403, 404))
    def get_webhook(webhook_id: WebhookId) -> WebhookDetail:
        return WebhookDetail.model_validate(webhooks.get(webhook_id))

    @app.delete("/v1/webhooks/<webhook_id>", summary="Delete a webhook endpoint (admin)",
                middlewares=needs("admin"), responses=_errors(403, 404))
    def delete_webhook(webhook_id: WebhookId) -> WebhookDeleted:
        return WebhookDeleted.model_validate(webhooks.delete(webhook_id))

    @app.post("/v1/webhooks/<webhook_id>/rotate", summary="A new signing secret (answered once); the "
              "previous one keeps signing beside it for 24 hours (admin)", middlewares=needs("admin"),
              responses=_errors(403, 404))
    def rotate_webhook(webhook_id: WebhookId) -> WebhookCreated:
        return WebhookCreated.model_validate(webhooks.rotate(webhook_id))

    @app.post("/v1/webhooks/<webhook_id>/replay", summary="Send the endpoint's events since a time "
              "again, oldest first, with their original webhook-id (admin)", middlewares=needs("admin"),
              responses=_errors(403, 404, 415))
    def replay_webhook(webhook_id: WebhookId, body: Annotated[WebhookReplay, Body()]) -> WebhookReplayed:
        since = _since(body.since)
        assert since is not None
        return WebhookReplayed.model_validate(webhooks.replay(webhook_id, since))

    @app.post("/v1/webhooks/<webhook_id>/enable", summary="Turn a disabled endpoint back on, its URL "
              "checked again; replay from missed_since for what it missed (admin)",
              middlewares=needs("admin"), responses=_errors(403, 404))
    def enable_webhook(webhook_id: WebhookId) -> WebhookEnabled:
        return WebhookEnabled.model_validate(webhooks.enable(webhook_id))
