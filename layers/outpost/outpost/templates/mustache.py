"""Mustache (logic-less) through pystache: parse once, then render with bounds.

The library parses and renders; this module only decides what goes in and counts what comes
out, through pystache's own hooks (the RenderEngine's escape / literal / resolve functions):

- `compile_part(text, field)` parses a template part (subject, html or text) with pystache's
  parser (an unclosed or mismatched section is a 422 naming the part) and walks its parse tree
  once for what rendering needs: the names used outside any section (`required`), whether it
  uses a partial (refused: partials are off; the only composition is a layout), and, for each
  section name, the most literal text one pass of that section can add (`per_pass`).
- `render_part(part, variables, ...)` renders with a `Budget`: every section pass is counted
  (a template with nested loops over lists multiplies; MAX_SECTION_PASSES stops it however
  little each pass writes) and every byte written is counted as it is written (variable
  values exactly, literal text by `per_pass`, an upper bound): past `max_bytes` the render
  stops with a 422 naming `variables`. A 1 KB template with 1 KB of variables cannot render
  more than max_bytes, nor loop more than MAX_SECTION_PASSES times.

Rules (README, "Templates"):
- `{{name}}` is HTML-escaped in html (& < > " '), `{{{name}}}` and `{{& name}}` are raw. In the
  subject and the text nothing is escaped (they are not HTML), and a value written into the
  subject must be one line (a CR or LF there would inject a header: 422 `variables.<name>`).
- A variable tag whose name resolves to nothing is a 422 naming it (`variables.first_name`).
  Names used outside every section are checked before rendering (all of them at once);
  inside a section a name may come from the section's item or from any enclosing context
  (Mustache's context stack), so it is checked when rendered: missing everywhere is a 422.
  A section or inverted section on an absent name is simply false (`{{^coupon}}` is how a
  template says "when there is none").
- Extra variables are ignored (as Postmark and SES do): one variables document can serve
  several templates.
- Values: strings as they are, numbers as JSON writes them, true/false, null as empty. Lists
  and objects written as a variable are a 422 (they have no text form).
- No lambdas (JSON has none; pystache would call a Python callable) and no partials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pystache import parse
from pystache.context import ContextStack, KeyNotFoundError
from pystache.parser import (
    ParsingError,
    _EscapeNode,
    _InvertedNode,
    _LiteralNode,
    _PartialNode,
    _SectionNode,
)
from pystache.renderengine import RenderEngine

from ..addresses import line_trouble
from ..errors import InvalidRequestError

MAX_SECTION_PASSES = 10_000  # section passes in one render (all sections, all depths)
MAX_TAG_CHARS = 256  # from a tag's {{ to its }}
MAX_SECTION_DEPTH = 16  # sections inside sections
MAX_RENDER_STEPS = 200_000  # parse-tree nodes evaluated in one render (tags, comments, text), all passes
_SURROGATE = re.compile("[\ud800-\udfff]")
_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


@dataclass(frozen=True)
class CompiledPart:
    """One parsed template part and what its walk found."""

    name: str  # "subject", "html" or "text": the template's field, for errors
    parsed: Any  # pystache's ParsedTemplate
    required: tuple[str, ...]  # variable names used outside any section (first part of dotted)
    per_pass: Mapping[str, int] = field(default_factory=dict)  # section name -> literal bytes a pass adds
    top_literal: int = 0  # literal bytes outside any section
    per_pass_nodes: Mapping[str, int] = field(default_factory=dict)  # section name -> nodes a pass evaluates
    top_nodes: int = 0  # nodes outside any section


class MissingVariableError(InvalidRequestError):
    """A variable the template uses is not in the request."""


def compile_part(text: str, field_name: str) -> CompiledPart:
    """Parse `text` (one part of a template) and walk it; a ParsingError or a partial is a
    422 naming the part."""
    check_tags(text, field_name)
    try:
        parsed = parse(text, raise_on_mismatch=True)
    except ParsingError as exc:
        raise InvalidRequestError(f"{field_name}: not a valid Mustache template: {exc}", field=field_name) from None
    except Exception as exc:  # noqa: BLE001 - the library's other refusals (an odd delimiter change)
        raise InvalidRequestError(f"{field_name}: not a valid Mustache template: {exc}", field=field_name) from None
    required: dict[str, None] = {}
    per_pass: dict[str, int] = {}
    top = _walk(parsed, field_name, required, per_pass, in_section=False)
    per_pass_nodes: dict[str, int] = {}
    top_nodes = _count_nodes(parsed, per_pass_nodes)
    return CompiledPart(field_name, parsed, tuple(required), per_pass, top, per_pass_nodes, top_nodes)


def check_tags(text: str, field_name: str) -> None:
    """One linear pass before pystache's parser sees the text: every `{{` is closed by `}}`
    within MAX_TAG_CHARS, no delimiter change (`{{=`), sections nested at most
    MAX_SECTION_DEPTH. The parser's tag pattern is tried at each `{{` and scans to the next
    `}}`: with many openers and no closer that is quadratic (16 KB of "{{" took 9 s); with a
    closer always near, each try is bounded. The depth bounds the parser's and the walk's
    recursion."""
    depth, i = 0, 0
    while (start := text.find("{{", i)) != -1:
        end = text.find("}}", start + 2, start + MAX_TAG_CHARS)
        if end == -1:
            raise InvalidRequestError(f"{field_name}: the tag opened at character {start} is not closed by }}}} "
                                      f"within {MAX_TAG_CHARS} characters", field=field_name)
        tag = text[start + 2:end].lstrip()
        if tag.startswith("{"):
            # pystache's raw form ends at "}" "}}" and scans the rest of the line for it: a
            # "{{{" must have its "}}}" within reach too.
            if text.find("}}}", start, start + MAX_TAG_CHARS) == -1:
                raise InvalidRequestError(f"{field_name}: the tag opened at character {start} is not closed by }}}}}} "
                                          f"within {MAX_TAG_CHARS} characters", field=field_name)
            tag = tag.lstrip("{ \t")
        if tag.startswith("="):
            raise InvalidRequestError(f"{field_name}: changing the delimiters ({{{{= ... =}}}}) is not supported",
                                      field=field_name)
        if tag[:1] in ("#", "^"):
            depth += 1
            if depth > MAX_SECTION_DEPTH:
                raise InvalidRequestError(f"{field_name}: sections nest more than {MAX_SECTION_DEPTH} deep",
                                          field=field_name)
        elif tag[:1] == "/":
            depth = max(0, depth - 1)
        i = end + 2


def _walk(parsed: Any, field_name: str, required: dict[str, None], per_pass: dict[str, int],
          in_section: bool) -> int:
    """The literal bytes of this level (inverted sections included: they render at most once
    per pass of the level), recording names and each section's own literal size."""
    own = 0
    for node in parsed._parse_tree:  # noqa: SLF001 - pystache's parse tree: a list of str and nodes
        if isinstance(node, str):
            own += len(node.encode("utf-8"))
        elif isinstance(node, _EscapeNode | _LiteralNode):
            if not in_section and node.key != ".":
                required.setdefault(node.key.split(".")[0])
        elif isinstance(node, _SectionNode):
            size = _walk(node.parsed, field_name, required, per_pass, in_section=True)
            per_pass[node.key] = max(per_pass.get(node.key, 0), size)
        elif isinstance(node, _InvertedNode):
            own += _walk(node.parsed_section, field_name, required, per_pass, in_section=True)
        elif isinstance(node, _PartialNode):
            raise InvalidRequestError(f"{field_name}: partials ({{{{> {node.key}}}}}) are not supported; use a "
                                      "layout to share a frame", field=field_name)
    return own


def _count_nodes(parsed: Any, per_pass_nodes: dict[str, int]) -> int:
    """The nodes one pass of this level evaluates (an inverted section's body included), recording
    each section's own count. A tag that writes nothing (an empty value, a comment, an inverted
    section) still costs its evaluation: the byte count alone let 10,000 of them inside two
    loops run 130 s."""
    own = 0
    for node in parsed._parse_tree:  # noqa: SLF001 - pystache's parse tree: a list of str and nodes
        own += 1
        if isinstance(node, _SectionNode):
            n = _count_nodes(node.parsed, per_pass_nodes)
            per_pass_nodes[node.key] = max(per_pass_nodes.get(node.key, 0), n)
        elif isinstance(node, _InvertedNode):
            own += _count_nodes(node.parsed_section, per_pass_nodes)
    return own


def missing_names(parts: list[CompiledPart], variables: Mapping[str, Any]) -> list[str]:
    """The names used outside every section that the variables lack, in template order."""
    out: dict[str, None] = {}
    for part in parts:
        for name in part.required:
            if name not in variables:
                out.setdefault(name)
    return list(out)


class Budget:
    """What one render may still write and loop (shared by the parts of one message)."""

    def __init__(self, max_bytes: int, max_passes: int = MAX_SECTION_PASSES,
                 max_steps: int = MAX_RENDER_STEPS) -> None:
        self.bytes_left, self.passes_left = max_bytes, max_passes
        self.max_bytes = max_bytes
        self.steps_left, self.max_steps = max_steps, max_steps

    def spend(self, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise InvalidRequestError(f"variables: the rendered message would exceed {self.max_bytes} bytes",
                                      field="variables")

    def step(self, n: int) -> None:
        self.steps_left -= n
        if self.steps_left < 0:
            raise InvalidRequestError(f"variables: rendering would take more than {self.max_steps} steps (the "
                                      "template's tags, comments and text, once per pass of their section)",
                                      field="variables")

    def loop(self) -> None:
        self.passes_left -= 1
        if self.passes_left < 0:
            raise InvalidRequestError(f"variables: the template's sections would run more than "
                                      f"{MAX_SECTION_PASSES} times", field="variables")


def _text_of(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _SURROGATE.search(value):  # JSON's \uD800 escape: no UTF-8 form, nothing can write it
            raise InvalidRequestError(f"variables.{name}: contains a lone surrogate, which is not valid "
                                      "Unicode", field=f"variables.{name}")
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    raise InvalidRequestError(f"variables.{name}: a list or an object cannot be written as text "
                              "(use it as a section)", field=f"variables.{name}")


class _Engine(RenderEngine):
    """pystache's engine with Outpost's hooks: names resolve in JSON data only, missing
    variables are refused, every pass and every byte is counted."""

    def __init__(self, part: CompiledPart, budget: Budget, *, html: bool, one_line: bool) -> None:
        super().__init__(literal=self._raw, escape=self._escaped if html else self._raw,
                         resolve_context=self._resolve, resolve_partial=self._no_partial, to_str=str)
        self.part, self.budget, self.one_line = part, budget, one_line

    def _raw(self, s: str) -> str:
        self.budget.spend(len(s.encode("utf-8")))
        return s

    def _escaped(self, s: str) -> str:
        return self._raw(s.translate(_HTML_ESCAPES))

    @staticmethod
    def _resolve(stack: ContextStack, name: str) -> Any:
        try:
            return stack.get(name)
        except KeyNotFoundError:
            return None

    @staticmethod
    def _no_partial(name: str) -> str:  # refused at compile time; never reached
        raise InvalidRequestError(f"partials are not supported ({name})", field="template")

    def fetch_string(self, context: ContextStack, name: str) -> str:
        try:
            value = context.get(name)
        except KeyNotFoundError:
            raise MissingVariableError(f"variables.{name}: the template uses {name!r} and the request does not "
                                       "give it", field=f"variables.{name}") from None
        text = _text_of(name, value)
        if self.one_line and line_trouble(text) is not None:
            raise InvalidRequestError(f"variables.{name}: a value written into the subject must be one line "
                                      f"({line_trouble(text)})", field=f"variables.{name}")
        return text

    def fetch_section_data(self, context: ContextStack, name: str) -> Any:
        data = super().fetch_section_data(context, name)
        return self._passes(data, self.part.per_pass.get(name, 0), self.part.per_pass_nodes.get(name, 0))

    def _passes(self, data: Any, literal: int, nodes: int = 0) -> Iterator[Any]:
        for item in data:
            self.budget.loop()
            self.budget.spend(literal)
            self.budget.step(nodes)
            yield item


def render_part(part: CompiledPart, variables: Mapping[str, Any], budget: Budget, *,
                html: bool = False, extra: Mapping[str, Any] | None = None) -> str:
    """Render one part against the variables (and `extra` on top: a layout's `@content`)."""
    budget.spend(part.top_literal)
    budget.step(part.top_nodes)
    stack = ContextStack(dict(variables))
    if extra:
        stack.push(dict(extra))
    engine = _Engine(part, budget, html=html, one_line=part.name == "subject")
    return str(part.parsed.render(engine, stack))


class _Marking(_Engine):
    """The html rendered as a skeleton (templates/inlined.py): each `{{name}}` value written as a
    marker (U+E000 n U+E001) and kept in `values`; a raw value other than `content` (a layout's
    `@content`, itself a skeleton) makes the skeleton `unsafe`. Nothing is counted: it runs after
    the same render succeeded within its budget."""

    def __init__(self, part: CompiledPart, values: list[str], content: str | None) -> None:
        super().__init__(part, Budget(1 << 62, 1 << 62, 1 << 62), html=True, one_line=False)
        self.values, self.content, self.unsafe = values, content, False

    def _raw(self, s: str) -> str:
        self.unsafe = self.unsafe or s is not self.content
        return s

    def _escaped(self, s: str) -> str:
        self.values.append(s)
        return f"\ue000{len(self.values) - 1}\ue001"


def render_marked(part: CompiledPart, variables: Mapping[str, Any], values: list[str],
                  content: str | None = None) -> str | None:
    """`part` (html) rendered with markers for its escaped values (appended to `values`, numbered
    on from what it holds), or None when a raw value would write HTML of its own."""
    stack = ContextStack(dict(variables))
    if content is not None:
        from .service import CONTENT

        stack.push({CONTENT: content})
    engine = _Marking(part, values, content)
    out = str(part.parsed.render(engine, stack))
    return None if engine.unsafe else out
