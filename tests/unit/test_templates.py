"""Stored templates' rules (issue 14) without sockets: the Mustache cases Outpost relies on
(through pystache), escaping per part, missing and extra variables, one-line subjects,
Unicode, layouts, CSS inlining, versions and the per-batch cache (an in-memory store), and the
bounds: generated inputs of growing size stop at the caps, with the work counted."""

from __future__ import annotations

import time
import tracemalloc
from html.parser import HTMLParser
from typing import Any

import pytest
from pydantic import ValidationError

from outpost.errors import ConflictError, InvalidRequestError, NotFoundError
from outpost.models import SendRequest, error_field
from outpost.templates import mustache
from outpost.templates.css import css_without_double_quotes
from outpost.templates.mustache import Budget, compile_part, render_part
from outpost.templates.service import MAX_RENDERED_BYTES, TemplateCache, TemplateService
from outpost.templates.text import html_to_text
from tests.fakes.templates import FakeTemplates


def _service() -> TemplateService:
    return TemplateService(FakeTemplates(), clock=lambda: 1_800_000_000.0)


def _render(variables: dict[str, Any], **fields: Any) -> dict[str, Any]:
    s = _service()
    s.create("t", {"name": "t", "subject": fields.pop("subject", "s"), **fields})
    return s.render("t", variables)


def _one(template: str, data: Any, html: bool = True) -> str:
    return render_part(compile_part(template, "html"), data, Budget(MAX_RENDERED_BYTES), html=html)


def _field(call: Any) -> str | None:
    with pytest.raises(InvalidRequestError) as exc:
        call()
    return exc.value.field


# ---- the Mustache cases relied on (spec: interpolation, sections, inverted, comments) ---------
SPEC = [
    ("Hello, {{subject}}!", {"subject": "world"}, "Hello, world!"),
    ("{{a.b.c}}", {"a": {"b": {"c": "deep"}}}, "deep"),
    ("{{#list}}({{.}}){{/list}}", {"list": ["a", "b", "c"]}, "(a)(b)(c)"),
    ("{{#list}}{{name}},{{/list}}", {"list": [{"name": "x"}, {"name": "y"}]}, "x,y,"),
    ("{{#b}}yes{{/b}}", {"b": True}, "yes"),
    ("{{#b}}yes{{/b}}", {"b": False}, ""),
    ("{{#b}}yes{{/b}}", {"b": []}, ""),
    ("{{#b}}yes{{/b}}", {}, ""),  # absent: false
    ("{{#ctx}}{{name}}{{/ctx}}", {"ctx": {"name": "Joe"}}, "Joe"),
    ("{{#sec}}{{a}}{{b}}{{/sec}}", {"a": "A", "sec": {"b": "B"}}, "AB"),  # the parent's context
    ("{{#o}}{{#i}}{{v}}{{w}}{{/i}}{{/o}}", {"o": [{"v": 1, "i": [{"w": 2}, {"w": 3}]}]}, "1213"),
    ("{{^b}}none{{/b}}", {}, "none"),
    ("{{^b}}none{{/b}}", {"b": False}, "none"),
    ("{{^b}}none{{/b}}", {"b": []}, "none"),
    ("{{^b}}none{{/b}}", {"b": True}, ""),
    ("12345{{! a comment }}67890", {}, "1234567890"),
    ("| This Is\n{{#boolean}}\n|\n{{/boolean}}\n| A Line", {"boolean": True}, "| This Is\n|\n| A Line"),
    ("{{n}} {{f}} {{t}} {{z}} [{{none}}]", {"n": 3, "f": 1.5, "t": True, "z": False, "none": None},
     "3 1.5 true false []"),
]


@pytest.mark.parametrize(("template", "data", "expected"), SPEC)
def test_mustache_cases(template: str, data: dict, expected: str) -> None:
    assert _one(template, data) == expected


def test_html_is_escaped_raw_forms_are_not_and_subject_and_text_never_are() -> None:
    v = "<a href=\"x\">Tom & 'Jerry'</a>"
    out = _render({"v": v}, subject="S: {{v}}", html="<p>{{v}}|{{{v}}}|{{& v}}</p>", text="T: {{v}}")
    escaped = "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#x27;Jerry&#x27;&lt;/a&gt;"
    assert out["html"] == f"<p>{escaped}|{v}|{v}</p>"
    assert out["subject"] == "S: " + v and out["text"] == "T: " + v


def test_missing_variables_are_named_extra_ones_ignored() -> None:
    html = "<p>{{first_name}} {{user.email}}</p>{{#rows}}{{cell}}{{/rows}}{{^coupon}}none{{/coupon}}"
    with pytest.raises(InvalidRequestError) as exc:
        _render({"rows": []}, subject="Hi {{first_name}}", html=html)
    assert exc.value.field == "variables.first_name" and "first_name, user" in exc.value.message
    assert _field(lambda: _render({"first_name": "A", "user": {}}, html=html)) == "variables.user.email"
    assert _field(lambda: _render({"first_name": "A", "user": {"email": "e"}, "rows": [{"x": 1}]},
                                  html=html)) == "variables.cell"
    out = _render({"first_name": "A", "user": {"email": "e"}, "rows": [{"cell": 1}], "unused": {"deep": [1]}},
                  html=html)
    assert out["html"] == "<p>A e</p>1none"


def test_a_list_or_object_is_not_text() -> None:
    assert _field(lambda: _render({"x": [1, 2]}, html="{{x}}")) == "variables.x"
    assert _field(lambda: _render({"x": {"a": 1}}, html="{{{x}}}")) == "variables.x"


@pytest.mark.parametrize("bad", ["a\r\nBcc: evil@x.test", "a\nb", "a\rb", "a\u2028b", "a\x00b"])
def test_a_subject_stays_one_line(bad: str) -> None:
    assert _field(lambda: _render({"name": bad}, subject="Hello {{name}}", html="<p>{{name}}</p>")) == "variables.name"
    # the same value in the html and text is fine: they are bodies
    out = _render({"name": bad}, subject="Hello", html="<p>{{name}}</p>", text="{{name}}")
    assert out["text"] == bad


def test_unicode_passes_through_every_part() -> None:
    out = _render({"n": "Zoë 🎉 日本"}, subject="Grüße {{n}} ✓", html="<p>{{n}}</p>", text="— {{n}}")
    assert (out["subject"], out["html"], out["text"]) == ("Grüße Zoë 🎉 日本 ✓", "<p>Zoë 🎉 日本</p>", "— Zoë 🎉 日本")


def test_partials_delimiter_changes_and_broken_sections_are_refused() -> None:
    s = _service()
    for html in ("{{> footer}}", "{{=<% %>=}}", "{{#a}}open", "{{#a}}x{{/b}}", "{{a", "{{{a}}"):
        assert _field(lambda h=html: s.create("t", {"name": "t", "subject": "s", "html": h})) == "html", html


# ---- layouts -------------------------------------------------------------------------------------
def test_layout_wraps_html_and_text_and_text_is_derived_from_the_wrapped_html() -> None:
    s = _service()
    s.create("frame", {"name": "f", "kind": "layout", "html": "<div>{{brand}} {{{@content}}}</div>"})
    s.create("hello", {"name": "h", "subject": "Hi", "html": "<p>Hi {{who}}</p>", "layout": "frame"})
    out = s.render("hello", {"brand": "ACME", "who": "<Al>"})
    assert out["html"] == "<div>ACME <p>Hi &lt;Al&gt;</p></div>"
    assert out["text"] == "ACME\n\nHi <Al>\n"
    # a layout without a text part leaves a template's own text unwrapped
    s.update("hello", {"text": "plain {{who}}"})
    assert s.render("hello", {"brand": "B", "who": "x"})["text"] == "plain x"


def test_layout_rules() -> None:
    s = _service()
    bad = [({"kind": "layout", "html": "<div>no placeholder</div>"}, "html"),
           ({"kind": "layout", "html": "{{{@content}}}{{{@content}}}"}, "html"),
           ({"kind": "layout", "html": "{{{@content}}}", "subject": "x"}, "subject"),
           ({"subject": "s", "html": "x", "layout": "nope"}, "layout")]
    for fields, field in bad:
        assert _field(lambda f=fields: s.create("t", {"name": "n", **f})) == field, fields
    s.create("plain", {"name": "n", "subject": "s", "html": "x"})
    assert _field(lambda: s.create("t2", {"name": "n", "subject": "s", "html": "x", "layout": "plain"})) == "layout"
    s.create("frame", {"name": "f", "kind": "layout", "html": "[{{{@content}}}]"})
    s.create("uses", {"name": "u", "subject": "s", "html": "x", "layout": "frame"})
    with pytest.raises(ConflictError):
        s.delete("frame")  # a layout in use is not deleted (test_a_layout_in_use_is_not_deleted)
    s.store.heads.pop("frame")  # a layout gone anyway (deleted before its uses were counted)
    assert _field(lambda: s.for_send("uses", None, {})) == "template"


def test_a_layout_in_use_is_not_deleted_and_the_409_names_a_few_and_the_count() -> None:
    s = _service()
    s.create("frame", {"name": "f", "kind": "layout", "html": "[{{{@content}}}]"})
    s.create("other", {"name": "o", "kind": "layout", "html": "({{{@content}}})"})
    for i in range(7):
        s.create(f"user-{i}", {"name": "u", "subject": "s", "html": "x", "layout": "frame"})
    with pytest.raises(ConflictError) as err:
        s.delete("frame")
    assert err.value.status == 409 and err.value.field == "alias"
    assert "used by 7 template(s) ('user-0', 'user-1', 'user-2', 'user-3', 'user-4' and 2 more)" in err.value.message
    assert s.render("user-6", {})["html"] == "[x]"  # still there, still wrapping
    with pytest.raises(ConflictError):  # a layout in use does not become a standard template either
        s.update("frame", {"kind": "standard", "subject": "s", "html": "x"})
    for i in range(5):  # only the latest version counts: moved to another layout, or to none
        s.update(f"user-{i}", {"layout": "other" if i % 2 else None})
    s.delete("user-5")
    with pytest.raises(ConflictError) as err:
        s.delete("frame")
    assert "used by 1 template(s) ('user-6')" in err.value.message
    s.delete("user-6")
    assert s.delete("frame") == {"alias": "frame", "deleted": True}
    with pytest.raises(ConflictError, match="used by 2 template"):
        s.delete("other")  # user-1, user-3


def test_css_is_inlined_and_link_tags_dropped() -> None:
    out = _render({}, html='<link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
                           "<style>.b { font-weight: bold } p { margin: 0 }</style><p class=b>x</p>")
    assert '<p class="b" style="margin: 0;font-weight: bold;">x</p>' in out["html"]  # specificity order
    assert "<style" not in out["html"] and "<link" not in out["html"]
    assert _render({}, html="<p>no style</p>")["html"] == "<p>no style</p>"  # untouched without <style>


class _Attrs(HTMLParser):
    """Every start tag's attributes, as a browser's tokenizer reads them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


HOSTILE = 'x" onmouseover="alert(1)" y=\'a\' z="'


@pytest.mark.parametrize("html", [
    '<style>.h { background-image: url("{{v}}") }</style><div class="h">x</div>',  # a CSS string
    "<style>.h { color: red }</style><div class=\"h\" style='background: url({{v}})'>x</div>",  # merged
    "<style>.h { content: '{{v}}' }</style><div class=\"h\">x</div>",
    '<style>.h { color: red }</style><div class="h" style="content: \'{{v}}\'">x</div>',
])
def test_an_escaped_value_in_css_cannot_break_out_of_the_inlined_style_attribute(html: str) -> None:
    """css-inline 0.11 writes the declarations it inlines into style="..." as they are: a `"` in
    CSS (a url("..."), a string, or an HTML-escaped value decoded from a style attribute) ended
    the attribute, and a variable's spaces then wrote attributes of their own."""
    out = _render({"v": HOSTILE}, html=html)["html"]
    (tag, attrs), = [t for t in _Attrs(out).tags if t[0] == "div"]
    assert set(attrs) == {"class", "style"}, out  # no onmouseover, y or z
    assert "alert(1)" in (attrs["style"] or ""), out  # the value stays inside the style


@pytest.mark.parametrize(("css", "expected"), [
    ('a:"x"', "a:'x'"), ('a:"it\'s"', r"a:'it\27 s'"), (r'a:"q\"q"', r"a:'q\22 q'"), (r'a:"x\\"', r"a:'x\\'"),
    ('a:"open', "a:'open"), (r"a:'x\"y'", r"a:'x\22 y'"), ("a:'x\"y'", r"a:'x\22 y'"),
    ('/* " */b:"c"', "/* ' */b:'c'"), (r'a\"b', r"a\22 b"), ("a:'b'", "a:'b'"),
])
def test_css_is_rewritten_without_a_double_quote_and_reads_the_same(css: str, expected: str) -> None:
    assert css_without_double_quotes(css) == expected


# ---- versions and the batch cache ------------------------------------------------------------------
def test_versions_pin_and_latest() -> None:
    s = _service()
    s.create("t", {"name": "t", "subject": "one {{x}}", "html": "<p>1</p>"})
    v2 = s.update("t", {"subject": "two {{x}}"})
    assert (v2["version"], v2["html"]) == (2, "<p>1</p>")  # the rest is carried over
    assert s.for_send("t", None, {"x": "!"}).subject == "two !"
    pinned = s.for_send("t", 1, {"x": "!"})
    assert (pinned.subject, pinned.version) == ("one !", 1)
    assert s.get("t", 1)["latest"] == 2
    assert _field(lambda: s.for_send("t", 3, {"x": 1})) == "template_version"
    assert _field(lambda: s.for_send("nope", None, {})) == "template"
    with pytest.raises(NotFoundError):
        s.get("t", 3)
    s.delete("t")
    assert _field(lambda: s.for_send("t", None, {"x": 1})) == "template"


def test_a_batch_loads_and_parses_each_template_once() -> None:
    store = FakeTemplates()
    s = TemplateService(store)
    s.create("t", {"name": "t", "subject": "Hi {{n}}", "html": "<p>{{n}}</p>"})
    store.reads = 0
    cache = TemplateCache()
    parsed: list[str] = []
    real = mustache.compile_part

    def counting(text: str, field: str) -> Any:
        parsed.append(field)
        return real(text, field)

    mustache.compile_part = counting  # type: ignore[assignment]
    try:
        out = [s.for_send("t", None, {"n": i}, cache) for i in range(500)]
    finally:
        mustache.compile_part = real  # type: ignore[assignment]
    assert [o.subject for o in out[:3]] == ["Hi 0", "Hi 1", "Hi 2"] and out[-1].html == "<p>499</p>"
    assert store.reads == 2 and sorted(parsed) == ["html", "subject"]  # head + version; each part once


# ---- bounds: generated inputs of growing size ----------------------------------------------------
def test_nested_sections_stop_at_the_pass_cap_however_little_they_write() -> None:
    t = compile_part("{{#a}}{{#a}}{{#a}}{{/a}}{{/a}}{{/a}}", "html")
    budget = Budget(MAX_RENDERED_BYTES)
    render_part(t, {"a": list(range(21))}, budget)  # 21 + 441 + 9261 passes
    assert mustache.MAX_SECTION_PASSES - budget.passes_left == 21 + 21 ** 2 + 21 ** 3
    started = time.thread_time()
    for n in (22, 100, 1000):  # 10^9 passes unbounded
        budget = Budget(MAX_RENDERED_BYTES)
        with pytest.raises(InvalidRequestError) as exc:
            render_part(t, {"a": list(range(n))}, budget)
        assert exc.value.field == "variables" and budget.passes_left == -1
    assert time.thread_time() - started < 30  # a ceiling only: ~0.1 s each


def test_rendered_size_stops_at_the_cap_before_the_memory_is_spent() -> None:
    variables = {"s": "x" * 40_000, "l": [0] * 9_000}  # 58 KB of variables: 360 MB unbounded
    SendRequest.model_validate({"from": "a@b.test", "to": "c@d.test", "template": "t", "variables": variables})
    t = compile_part("{{#l}}{{{s}}}{{/l}}", "html")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequestError) as exc:
            render_part(t, variables, Budget(MAX_RENDERED_BYTES))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.field == "variables" and "exceed" in exc.value.message
    assert peak < 3 * MAX_RENDERED_BYTES


def test_rendering_grows_linearly_with_the_input() -> None:
    t = compile_part("{{#items}}<li>{{name}} x{{qty}}</li>{{/items}}", "html")
    sizes, peaks = [], []
    # From 1,000 items (a ~100 KB peak), not 500 (~50 KB): tracemalloc also counts what other
    # threads of this process allocate meanwhile, and in the full suite the session's local
    # stack polls in threads (~100 KB within a second, measured); the smallest peak is the
    # ratio's base, so it must be well above that noise.
    for n in (1000, 2000, 4000, 8000):
        items = [{"name": f"item{i:05d}", "qty": 1} for i in range(n)]
        budget = Budget(MAX_RENDERED_BYTES)
        tracemalloc.start()
        out = render_part(t, {"items": items}, budget)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        sizes.append(len(out))
        assert mustache.MAX_SECTION_PASSES - budget.passes_left == n
        assert MAX_RENDERED_BYTES - budget.bytes_left >= len(out)  # every byte was counted
    assert [size / sizes[0] for size in sizes] == [1, 2, 4, 8]
    assert peaks[3] < 12 * peaks[0]  # linear (8x), with room for noise


HOSTILE_TEMPLATES = ["{{" * 128_000, "{{{" * 85_000, ("{{ " * 80 + "}}") * 1000, "{{#a}}" * 40_000,
                     ("{{{ a }}} {{ {b}} x}}}") * 10_000, "{{=<% %>=}}" * 20_000, "{{a}}" * 50_000]


def test_hostile_template_sources_are_parsed_or_refused_in_linear_time() -> None:
    started = time.thread_time()
    outcomes = []
    for text in HOSTILE_TEMPLATES:  # each ~240 KB, the size cap
        try:
            compile_part(text, "html")
            outcomes.append("ok")
        except InvalidRequestError as exc:
            assert exc.field == "html"
            outcomes.append("422")
    assert outcomes == ["422", "422", "422", "422", "ok", "422", "ok"]
    assert time.thread_time() - started < 30  # a ceiling only: ~1 s in all (16 KB of "{{" took 9 s before)


def test_text_derivation_is_linear_on_hostile_html() -> None:
    started = time.thread_time()
    for piece in ("<a", "<!--", "</", "<a b='", "<![CDATA[", "<!", "<?", "<" + "a" * 1000, "<style>"):
        out = html_to_text(piece * (1_000_000 // len(piece)))  # 1 MB each
        assert len(out) <= 1_000_001
    # CPU time (as the other ceilings here): 10 s of wall clock at a load of 12, ~2 s idle
    assert time.thread_time() - started < 60  # a ceiling only: 200 KB of "<a" took 74 s with html.parser


def test_variables_are_capped_in_size_and_depth() -> None:
    base = {"from": "a@b.test", "to": "c@d.test", "template": "t"}
    deep: dict[str, Any] = {"v": 1}
    for _ in range(10):
        deep = {"n": deep}
    for variables in (deep, {"s": "x" * 70_000}):
        with pytest.raises(ValidationError) as exc:
            SendRequest.model_validate({**base, "variables": variables})
        assert error_field(exc.value)[0] == "variables"


# ---- the send request's two forms ------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "field"), [
    ({"template": "t", "subject": "x"}, "subject"),
    ({"template": "t", "html": "x"}, "html"),
    ({"template": "t", "text": "x"}, "text"),
    ({"subject": "s", "text": "t", "template_version": 2}, "template_version"),
    ({"subject": "s", "text": "t", "variables": {}}, "variables"),
    ({"text": "t"}, "subject"),
    ({"template": "Not An Alias"}, "template"),
    ({"template": "t", "subject": "s", "html": None}, "subject"),
])
def test_template_or_body_names_the_field(extra: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SendRequest.model_validate({"from": "a@b.test", "to": "c@d.test", **extra})
    assert error_field(exc.value)[0] == field


# ---- HTML to text ----------------------------------------------------------------------------------
TEXT_CASES = [
    ("<p>One</p><p>Two</p>", "One\n\nTwo\n"),
    ("a<br>b<br/>c", "a\nb\nc\n"),
    ("<ul><li>x</li><li>y</li></ul>", "- x\n- y\n"),
    ('<a href="https://e.test/r?a=1&amp;b=2">Reset</a>', "Reset (https://e.test/r?a=1&b=2)\n"),
    ('<a href="https://e.test">https://e.test</a>', "https://e.test\n"),
    ('<a href="mailto:x@e.test">write</a> <a href="#top">top</a>', "write top\n"),
    ("<head><title>T</title><style>p{}</style></head><script>a<b</script><p>body</p>", "body\n"),
    ("x  \n\t y &amp; z &lt;3 &#x1F600;", "x y & z <3 \U0001F600\n"),
    ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a | b\n\nc | d\n"),
    ('<img alt="ACME logo" src="x">Hi', "ACME logo Hi\n"),
    ("<pre>  a\n  b</pre>", "  a\n  b\n"),
    ("<!-- hidden --><P>Upper</P>", "Upper\n"),
    ("1 < 2 and <3", "1 < 2 and <3\n"),
    ("", ""),
]


@pytest.mark.parametrize(("html", "text"), TEXT_CASES)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_a_request_dumped_with_its_defaults_reads_back() -> None:
    for body in ({"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "t"},
                 {"from": "a@b.test", "to": "c@d.test", "template": "t", "variables": {"x": 1}}):
        req = SendRequest.model_validate(body)
        assert SendRequest.model_validate(req.model_dump(mode="json", by_alias=True)) == req
