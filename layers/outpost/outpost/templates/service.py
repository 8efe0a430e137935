"""Stored templates without HTTP (api/templates.py is the HTTP side): create, list, show, new
versions, delete, preview; and the rendering a send uses (api/service.py).

  create    alias + version 1 (409 if the alias exists)
  update    a new version: the fields given replace the latest's, the others are kept
  delete    the alias and all its versions: new sends naming it are a 422 (`template`);
            messages accepted before are unaffected (they hold their rendered bodies); a
            layout that a template's latest version uses is not deleted: 409 naming them
  render    subject, html and text as a send would have them; nothing is stored
  for_send  the same, through a per-request cache (TemplateCache): a batch loads and
            parses each (alias, version) once, and renders it per message; its CSS is
            inlined once per shape of the html (inlined.py), the same bytes

Rendering (mustache.py has the Mustache rules): the template's parts are rendered against
the variables; a standard template with a layout is wrapped by the layout's latest version at
`{{{@content}}}` (html, and text when the layout has a text part); CSS in <style> is inlined
into style attributes (css-inline, remote stylesheets never loaded); a template without text
gets one derived from the final HTML (text.py). One Budget bounds the whole message.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..clock import iso
from ..errors import ConflictError, InvalidRequestError, LayoutInUseError, NotFoundError
from ..records import TemplateHead, TemplateVersion
from ..store import Templates

if TYPE_CHECKING:
    from .mustache import Budget, CompiledPart

ALIAS_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ALIAS = re.compile(ALIAS_PATTERN)
CONTENT = "@content"  # a layout's placeholder: {{{@content}}}
PLACEHOLDER = "{{{@content}}}"
MAX_SUBJECT = 998  # characters (one header line, RFC 5322 §2.1.1)
MAX_HTML_BYTES = 256_000  # UTF-8 bytes of a template's html (the version item stays < 400 KB)
MAX_TEXT_BYTES = 100_000
MAX_RENDERED_BYTES = 2_000_000  # subject + html + text of one rendered message
MAX_VARIABLES_BYTES = 65_536  # the variables document, as JSON
MAX_VARIABLES_DEPTH = 10
LAYOUT_USERS_NAMED = 5  # a layout's 409 names this many of the templates using it


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str | None
    text: str | None
    alias: str
    version: int


@dataclass(frozen=True)
class Prepared:
    """A template version parsed, with its layout's latest version (parsed) if it has one."""

    version: TemplateVersion
    parts: Mapping[str, CompiledPart]
    layout: Mapping[str, CompiledPart] | None = None
    batch: dict[str, Any] = field(default_factory=dict, compare=False)  # per batch: the html's Shapes (inlined.py)
    # (one dict for all the batch's templates, TemplateCache: a skeleton alone decides its shape, and
    # MAX_SHAPES then bounds the batch's memory and wasted builds, not each template's)


def check_alias(alias: str, field: str = "alias") -> str:
    if not _ALIAS.match(alias):
        raise InvalidRequestError(f"{field}: {alias[:80]!r} is not a template alias (lower-case letters, digits, "
                                  "'-' and '_', at most 64, starting with a letter or digit)", field=field)
    return alias


def compile_version(v: TemplateVersion) -> dict[str, CompiledPart]:
    from .mustache import compile_part

    parts = {"html": compile_part(v.html, "html")} if v.html else {}
    if v.subject is not None:
        parts["subject"] = compile_part(v.subject, "subject")
    if v.text is not None:
        parts["text"] = compile_part(v.text, "text")
    return parts


def check_content(v: TemplateVersion) -> None:
    """A version's own rules (the models checked types and lengths): sizes in bytes, the kind's
    fields, a layout's placeholder, and that every part parses."""
    if len(v.html.encode("utf-8")) > MAX_HTML_BYTES:
        raise InvalidRequestError(f"html: at most {MAX_HTML_BYTES} bytes", field="html")
    if v.text is not None and len(v.text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InvalidRequestError(f"text: at most {MAX_TEXT_BYTES} bytes", field="text")
    if not v.html and v.text is None:
        raise InvalidRequestError("html: a template has html, text or both", field="html")
    if v.kind == "layout":
        if v.subject is not None:
            raise InvalidRequestError("subject: a layout has no subject (the template it wraps has)", field="subject")
        if v.layout is not None:
            raise InvalidRequestError("layout: a layout cannot have a layout", field="layout")
        for name in ("html", "text"):
            body = getattr(v, name)
            if body and body.count(PLACEHOLDER) != 1:
                raise InvalidRequestError(f"{name}: a layout holds {PLACEHOLDER} exactly once", field=name)
    elif v.subject is None:
        raise InvalidRequestError("subject is required", field="subject")
    compile_version(v)


class TemplateCache:
    """Templates loaded and parsed for one request (a batch: each (alias, version) once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, int | None], Prepared] = {}
        self._batch: dict[str, Any] = {}

    def get(self, key: tuple[str, int | None], load: Callable[[], Prepared]) -> Prepared:
        with self._lock:  # a batch's threads wait for the first load instead of repeating it
            if key not in self._by_key:
                self._by_key[key] = replace(load(), batch=self._batch)
            return self._by_key[key]


class TemplateService:
    def __init__(self, store: Templates, clock: Callable[[], float] = time.time) -> None:
        self.store, self.clock = store, clock

    # ---- management -----------------------------------------------------------------------------
    def create(self, alias: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        check_alias(alias)
        v = TemplateVersion(alias=alias, version=1, created_at=iso(self.clock()), **fields)
        self._check(v)
        if not self.store.create_template(v):
            raise ConflictError(f"a template {alias!r} exists: PUT /v1/templates/{alias} adds a version",
                                field="alias")
        return _view(v)

    def update(self, alias: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        latest = self._version(alias, None)
        base = {k: getattr(latest, k) for k in ("name", "kind", "subject", "html", "text", "layout")}
        base.update(changes)
        if latest.kind == "layout" and base["kind"] != "layout":
            self._refuse_if_used(alias, "make it a standard template")
        now = iso(self.clock())
        self._check(TemplateVersion(alias=alias, version=latest.version + 1, created_at=now, **base))
        try:
            v = self.store.add_version(alias, lambda n: TemplateVersion(alias=alias, version=n, created_at=now,
                                                                        **base))
        except LayoutInUseError:  # a template started using it meanwhile (the store's condition)
            self._refuse_if_used(alias, "make it a standard template")
            raise
        if v is None:
            raise NotFoundError(f"no template {alias!r}", field="alias")
        return _view(v)

    def get(self, alias: str, version: int | None = None) -> dict[str, Any]:
        v = self._version(alias, version)
        head = self.store.head(alias)
        return dict(_view(v), latest=head.latest if head else v.version)

    def list(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        page = self.store.templates(limit=limit, after=_decode_cursor(cursor))
        return {"items": [_head_view(h) for h in page.items],
                "next_cursor": _encode_cursor(page.cursor) if page.cursor else None}

    def delete(self, alias: str) -> dict[str, Any]:
        check_alias(alias)
        head = self.store.head(alias)
        if head is not None and head.kind == "layout":
            self._refuse_if_used(alias, "delete it")
        try:
            deleted = self.store.delete_template(alias)
        except LayoutInUseError:  # a template started using it meanwhile (the store's condition)
            self._refuse_if_used(alias, "delete it")
            raise
        if not deleted:
            raise NotFoundError(f"no template {alias!r}", field="alias")
        return {"alias": alias, "deleted": True}

    def _refuse_if_used(self, alias: str, what: str) -> None:
        """409 naming a few of the templates whose latest version uses the layout, and how many
        (as Postmark refuses to delete a layout in use: their next send would fail)."""
        users = self.store.layout_users(alias, limit=LAYOUT_USERS_NAMED)
        if users.count:
            named = ", ".join(repr(a) for a in users.aliases)
            more = f" and {users.count - len(users.aliases)} more" if users.count > len(users.aliases) else ""
            raise LayoutInUseError(f"layout {alias!r} is used by {users.count} template(s) ({named}{more}): give "
                                   f"them another layout or none (PUT), or delete them, before you {what}",
                                   field="alias")

    def _check(self, v: TemplateVersion) -> None:
        check_content(v)
        if v.layout is not None:
            check_alias(v.layout, "layout")
            head = self.store.head(v.layout)
            if head is None or head.kind != "layout":
                raise InvalidRequestError(f"layout: no layout template {v.layout!r}", field="layout")

    def _version(self, alias: str, version: int | None, field: str = "alias") -> TemplateVersion:
        check_alias(alias, field)
        n = version
        if n is None:
            head = self.store.head(alias)
            if head is None:
                raise NotFoundError(f"no template {alias!r}", field=field)
            n = head.latest
        v = self.store.version(alias, n)
        if v is None:
            raise NotFoundError(f"no template {alias!r} version {n}", field="version" if version else field)
        return v

    # ---- rendering -----------------------------------------------------------------------------
    def render(self, alias: str, variables: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
        """POST /v1/templates/{alias}/render: the preview (nothing stored)."""
        r = self._render(self._prepare(alias, version, "alias"), variables)
        return {"template": r.alias, "version": r.version, "subject": r.subject, "html": r.html, "text": r.text}

    def for_send(self, alias: str, version: int | None, variables: Mapping[str, Any],
                 cache: TemplateCache | None = None) -> Rendered:
        """What a send with `template` stores; unknown alias or version: 422 naming `template`
        (or `template_version`): the request names something that is not there."""
        batch, cache = cache is not None, cache or TemplateCache()
        try:
            prepared = cache.get((alias, version), lambda: self._prepare(alias, version, "template"))
        except NotFoundError as exc:
            raise InvalidRequestError(exc.message, field="template_version" if exc.field == "version"
                                      else "template") from None
        return self._render(prepared, variables, batch=batch)

    def _prepare(self, alias: str, version: int | None, field: str) -> Prepared:
        v = self._version(alias, version, field)
        if v.kind == "layout":
            raise InvalidRequestError(f"{field}: {alias!r} is a layout: render or send a template that uses it",
                                      field=field)
        layout = None
        if v.layout is not None:
            head = self.store.head(v.layout)
            lv = self.store.version(v.layout, head.latest) if head else None
            if lv is None or lv.kind != "layout":
                raise InvalidRequestError(f"{field}: the layout {v.layout!r} of {alias!r} no longer exists",
                                          field=field)
            layout = compile_version(lv)
        return Prepared(v, compile_version(v), layout)

    def _render(self, p: Prepared, variables: Mapping[str, Any], *, batch: bool = False) -> Rendered:
        from .mustache import Budget, missing_names, render_part

        names = [n for n in missing_names([*p.parts.values(), *(p.layout or {}).values()], variables) if n != CONTENT]
        if names:
            raise InvalidRequestError(f"variables.{names[0]}: the template uses {', '.join(names)}, which the "
                                      "request does not give", field=f"variables.{names[0]}")
        budget = Budget(MAX_RENDERED_BYTES)
        out = {name: render_part(part, variables, budget, html=name == "html") for name, part in p.parts.items()}
        if p.layout is not None:
            for name in ("html", "text"):
                if name in p.layout and out.get(name) is not None:
                    out[name] = _wrap(p.layout[name], variables, budget, out[name], html=name == "html")
        html = out.get("html")
        if html:
            html = _inline_shaped(p, variables, html, budget) if batch else _inline_css(html, budget)
        text = out.get("text")
        if text is None and html:
            from .text import html_to_text

            text = html_to_text(html)
        subject = out.get("subject", "")
        if len(subject) > MAX_SUBJECT:  # what a send refuses, the preview refuses too
            raise InvalidRequestError(f"variables: the rendered subject would be {len(subject)} characters; at "
                                      f"most {MAX_SUBJECT}", field="variables")
        return Rendered(subject, html or None, text, p.version.alias, p.version.version)


def _wrap(layout: CompiledPart, variables: Mapping[str, Any], budget: Budget, content: str, *, html: bool) -> str:
    from .mustache import render_part

    budget.bytes_left += len(content.encode("utf-8"))  # written once already: counted once
    return render_part(layout, variables, budget, html=html, extra={CONTENT: content})


def _inline_css(html: str, budget: Budget) -> str:
    """css-inline, once the bytes it can add are known to fit the message's budget: its time
    and output grow with rules times the elements they match (css.py inlined_bytes_bound)."""
    from .css import inline_css, inlined_bytes_bound

    _charge_inlining(inlined_bytes_bound(html), budget)
    return inline_css(html)


def _charge_inlining(added: int, budget: Budget) -> None:
    if added > budget.bytes_left:
        raise InvalidRequestError(f"variables: inlining the template's CSS could add {added} bytes to the html; "
                                  f"the rendered message would exceed {budget.max_bytes} bytes", field="variables")
    budget.spend(added)


def _inline_shaped(p: Prepared, variables: Mapping[str, Any], html: str, budget: Budget) -> str:
    """_inline_css's result, byte for byte, through the batch's shapes of this template's html
    (templates/inlined.py: CSS inlined once per shape, then each message's values substituted);
    _inline_css itself whenever that would not be exact."""
    from .inlined import CLOSE, OPEN, Shapes, plain, unmarked
    from .mustache import render_marked

    lowered = html.lower()
    if ("<style" not in lowered and "<link" not in lowered) or OPEN in html or CLOSE in html:
        return _inline_css(html, budget)
    shapes = p.batch.get("shapes") or p.batch.setdefault("shapes", Shapes())
    if not shapes.worth_marking():
        return _inline_css(html, budget)
    values: list[str] = []
    skeleton = render_marked(p.parts["html"], variables, values)
    if skeleton is not None and p.layout is not None and "html" in p.layout:
        skeleton = render_marked(p.layout["html"], variables, values, content=skeleton)
    exact = skeleton is not None and all(plain(v) for v in values) and unmarked(skeleton, values) == html
    shape = shapes.get(skeleton, len(values), budget.bytes_left) if exact and skeleton is not None else None
    shapes.tally(shape)  # a batch whose skeletons never repeat stops marking (Shapes.worth_marking)
    if shape is None:
        return _inline_css(html, budget)
    _charge_inlining(shape.bound, budget)
    return shape.fill(values)


def _view(v: TemplateVersion) -> dict[str, Any]:
    out = v.as_dict()
    out.setdefault("text", None)
    return out


def _head_view(h: TemplateHead) -> dict[str, Any]:
    return h.as_dict()


def _encode_cursor(alias: str) -> str:
    return base64.urlsafe_b64encode(alias.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        alias = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        alias = ""
    if not _ALIAS.match(alias):
        raise InvalidRequestError("invalid cursor: pass back next_cursor as given", field="cursor")
    return alias
