"""Template routes (issue 14): reading and previewing need scope read; writing needs admin
(a template's change alters every later send that names it, as a domain's does).

  POST   /v1/templates                  {"alias", "name", "subject", "html", "text", "layout", "kind"} -> 201
  GET    /v1/templates                  the aliases with their latest version (paged: limit, cursor)
  GET    /v1/templates/{alias}          the latest version (?version=N: that one)
  PUT    /v1/templates/{alias}          a new version (the fields given replace the latest's)
  DELETE /v1/templates/{alias}          the alias and its versions
  POST   /v1/templates/{alias}/render   {"variables", "version"} -> the rendered subject, html, text

templates/service.py holds the rules; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..models import OneLine, check_variables
from .routes import CursorQ, Limit, Scopes, _errors

if TYPE_CHECKING:
    from ..templates.service import TemplateService

ALIAS_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # templates/service.py ALIAS_PATTERN
_ALIAS_DOC = "lower-case letters, digits, '-' and '_'; at most 64; starts with a letter or digit"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: OneLine = Field(min_length=1, max_length=200)
    kind: Literal["standard", "layout"] = Field(default="standard", description="a layout wraps "
                                                "standard templates at {{{@content}}}")
    subject: OneLine | None = Field(default=None, max_length=998, description="Mustache; required for "
                                    "a standard template, none for a layout")
    html: str = Field(default="", max_length=256_000, description="Mustache; at most 256,000 bytes (UTF-8)")
    text: str | None = Field(default=None, max_length=100_000, description="Mustache; at most 100,000 "
                             "bytes; none: derived from the rendered html")
    layout: str | None = Field(default=None, pattern=ALIAS_PATTERN, description="the alias of a layout "
                               "template that wraps this one (its latest version, when rendered)")


class TemplateCreate(_Content):
    alias: str = Field(pattern=ALIAS_PATTERN, description=_ALIAS_DOC)


class TemplateUpdate(_Content):
    """A new version: the fields given replace the latest version's, the others are kept
    (null removes text or layout)."""

    name: OneLine | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]
    kind: Literal["standard", "layout"] | None = None  # type: ignore[assignment]
    html: str | None = Field(default=None, max_length=256_000)  # type: ignore[assignment]


class TemplateRender(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    variables: dict[str, Any] = Field(default_factory=dict, description="at most 64 KiB as JSON, "
                                      "nested at most 10 deep; names the template does not use are ignored")
    version: int | None = Field(default=None, ge=1, description="default: the latest")

    @field_validator("variables")
    @classmethod
    def _variables(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_variables(v)


class TemplateView(_Out):
    alias: str
    version: int
    latest: int | None = None
    name: str
    kind: str
    subject: str | None = None
    html: str
    text: str | None = None
    layout: str | None = None
    created_at: str


class TemplateItem(_Out):
    alias: str
    latest: int
    name: str
    kind: str
    layout: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class TemplateList(_Out):
    items: list[TemplateItem]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class TemplateDeleted(_Out):
    alias: str
    deleted: bool


class TemplateRendered(_Out):
    template: str
    version: int
    subject: str
    html: str | None = None
    text: str | None = None


Alias = Annotated[str, Path(min_length=1, max_length=64, pattern=ALIAS_PATTERN, description=_ALIAS_DOC)]
VersionQ = Annotated[int | None, Query(ge=1, description="this version (default: the latest)")]


def add_template_routes(app: APIGatewayRestResolver, needs: Scopes, templates: TemplateService) -> None:
    @app.post("/v1/templates", summary="Store a template (admin): version 1 of a new alias",
              status_code=201, middlewares=needs("admin"),
              responses=_errors(403, 409, 415, ok=201, ok_text="Created"))
    def create_template(body: Annotated[TemplateCreate, Body()]) -> Response[TemplateView]:
        out = templates.create(body.alias, body.model_dump(exclude={"alias"}))
        return Response(status_code=201, content_type="application/json", body=TemplateView(**out))

    @app.get("/v1/templates", summary="The templates, by alias, with their latest version",
             middlewares=needs("read"), responses=_errors(400, 403))
    def list_templates(limit: Limit = 50, cursor: CursorQ = None) -> TemplateList:
        return TemplateList.model_validate(templates.list(limit=limit, cursor=cursor))

    @app.get("/v1/templates/<alias>", summary="A template: its latest version, or ?version=N",
             middlewares=needs("read"), responses=_errors(403, 404))
    def get_template(alias: Alias, version: VersionQ = None) -> TemplateView:
        return TemplateView.model_validate(templates.get(alias, version))

    @app.put("/v1/templates/<alias>", summary="A new version of a template (admin); the fields given "
             "replace the latest version's", middlewares=needs("admin"), responses=_errors(403, 404, 415))
    def update_template(alias: Alias, body: Annotated[TemplateUpdate, Body()]) -> TemplateView:
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items()
                   if v is not None or k in ("subject", "text", "layout")}  # null removes only these
        return TemplateView.model_validate(templates.update(alias, changes))

    @app.delete("/v1/templates/<alias>", summary="Delete a template and all its versions (admin); mail "
                "accepted before is unaffected; a layout that templates use: 409 naming them",
                middlewares=needs("admin"), responses=_errors(403, 404, 409))
    def delete_template(alias: Alias) -> TemplateDeleted:
        return TemplateDeleted.model_validate(templates.delete(alias))

    @app.post("/v1/templates/<alias>/render", summary="Preview: the subject, html and text a send "
              "with these variables would have (nothing is stored or sent)", middlewares=needs("read"),
              responses=_errors(403, 404, 415))
    def render_template(alias: Alias, body: Annotated[TemplateRender, Body()]) -> TemplateRendered:
        return TemplateRendered.model_validate(templates.render(alias, body.variables, body.version))
