"""A batch's CSS inlining through shapes (templates/inlined.py) gives byte for byte what the
per-message path gives (service._inline_css): on the realistic corpus of bench/template_corpus.py,
and for generated variables over templates that put a value in every context the shape's checks
tell apart (text, quoted and unquoted attributes, class / id / style, a table, <pre>, <textarea>,
a comment, <script>, <style>, a reference or tag the value could complete, attribute selectors,
`:empty`, a layout, a raw tag). Each generated batch renders its messages twice through one cache,
so the second pass goes through a built shape wherever the shape is exact."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outpost.templates.css import inlined_bytes_bound
from outpost.templates.inlined import build_shape, unmarked
from outpost.templates.mustache import compile_part, render_marked
from outpost.templates.service import TemplateCache, TemplateService
from tests.fakes.templates import FakeTemplates

_PATH = Path(__file__).resolve().parents[2] / "bench" / "template_corpus.py"
_spec = importlib.util.spec_from_file_location("template_corpus", _PATH)
assert _spec and _spec.loader
corpus = importlib.util.module_from_spec(_spec)
sys.modules["template_corpus"] = corpus
_spec.loader.exec_module(corpus)

CSS = "<style>p { color: red } .a { margin: 0 } #b { padding: 1px } td { border: 0 } em:empty { x: y }</style>"
# name -> html: each puts {{v}} (and {{w}}) somewhere a value behaves differently.
TEMPLATES = {
    "text": CSS + "<p>Hi {{v}}, <em>{{w}}</em></p>",
    "quoted": CSS + '<p><a href="https://x.test/{{v}}" title=\'{{w}}\'>go</a></p>',
    "unquoted": CSS + "<p><a title={{v}} class=a>go</a></p>",
    "class": CSS + '<p class="{{v}}">x</p>',
    "id": CSS + '<p id="{{w}}">y</p>',
    "style": CSS + '<p style="color: {{v}}">x</p>',
    "table": CSS + "<table>{{v}}<tr><td>{{w}}</td></tr></table>",
    "pre": CSS + "<pre>{{v}}</pre><textarea>{{w}}</textarea>",
    "comment": CSS + "<p><!-- {{v}} --></p>",
    "script": CSS + "<p><script>var a = '{{w}}';</script></p>",
    "in-style": "<style>p { color: {{v}} }</style><p>{{w}}</p>",
    "reference": CSS + "<p>&no{{v}} &#{{w}}</p>",
    "tag": CSS + "<p>a <{{w}} b</p>",
    "selectors": "<style>[href$='q'] { margin: 0 }</style><a href='{{v}}' title='{{w}}'>x</a>",
    "raw": CSS + "<p>{{{v}}} {{w}}</p>",
    "loop": CSS + ("<table>{{#items}}<tr><td class=a>{{n}}</td><td>{{w}}</td></tr>{{/items}}</table>"
                   "{{^items}}<p>none</p>{{/items}}"),
}
VALUE = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(list("aZ09 &<>\"';#/=-\t\n\r\f\x00\xa0\u2028\ue000\ue001\ue002[].:!")),
            max_size=10),
    st.sampled_from(["", " ", "a", "b", "c1", "red", "a b", "t;", "b>", "amp;", "#65;", "--", "x\ny", "\nx", "&amp;"]),
)
VARIABLES = st.fixed_dictionaries({"v": VALUE, "w": VALUE,
                                   "items": st.lists(st.fixed_dictionaries({"n": VALUE}), max_size=3)})


def _service(html: str, layout: str | None = None) -> TemplateService:
    s = TemplateService(FakeTemplates(), clock=lambda: 1_800_000_000.0)
    if layout is not None:
        s.create("frame", {"name": "f", "kind": "layout", "html": layout})
    s.create("t", {"name": "t", "subject": "s", "html": html, **({"layout": "frame"} if layout else {})})
    return s


def _outcome(call: Any) -> Any:
    try:
        r = call()
    except Exception as exc:  # noqa: BLE001 - the per-message path's error is part of what must match
        return type(exc).__name__, str(exc)
    return r.html, r.text, r.subject


def _same_as_per_message(s: TemplateService, batch: list[dict[str, Any]]) -> int:
    """Render `batch` twice through one cache and compare each message with the per-message path;
    the number of messages that went through a built shape."""
    cache = TemplateCache()
    for _ in range(2):
        for variables in batch:
            alone = _outcome(lambda v=variables: s.for_send("t", None, v))  # no cache: per message
            assert _outcome(lambda v=variables: s.for_send("t", None, v, cache)) == alone, variables
    shapes = next(iter(cache._by_key.values())).batch.get("shapes")  # noqa: SLF001
    return 0 if shapes is None else sum(1 for v in shapes._built.values() if v is not None)  # noqa: SLF001


def test_the_realistic_corpus_goes_through_shapes_and_gives_the_per_message_bytes() -> None:
    s = _service(corpus.realistic_html())
    batch = [corpus.realistic_variables(i) for i in range(12)]
    assert _same_as_per_message(s, batch) == 2  # with and without a coupon: two shapes, both exact


def test_a_shape_charges_the_bound_the_per_message_path_charges() -> None:
    part = compile_part(corpus.realistic_html(), "html")
    for i in range(3):
        values: list[str] = []
        skeleton = render_marked(part, corpus.realistic_variables(i), values)
        assert skeleton is not None
        shape = build_shape(skeleton, len(values))
        assert shape is not None
        assert shape.bound == inlined_bytes_bound(unmarked(skeleton, values)) > 0


def test_a_value_that_decides_what_css_matches_gets_no_shape() -> None:
    # class="a" matches .a; a marker matches nothing: substituting would leave the style out.
    for name in ("class", "id", "style", "in-style", "reference", "tag", "selectors", "comment", "script",
                 "unquoted"):
        html = TEMPLATES[name]
        values: list[str] = []
        skeleton = render_marked(compile_part(html, "html"), {"v": "a", "w": "b", "items": []}, values)
        assert skeleton is not None and build_shape(skeleton, len(values)) is None, html


# Values that parse or match differently from a marker: each must give the per-message bytes.
EDGES = [
    ("reference", {"v": "t;", "w": "65;"}),  # &no + t; is &not;, &# + 65; is A
    ("tag", {"w": "b"}),  # < + b opens a tag
    ("class", {"v": "a"}), ("id", {"w": "b"}), ("style", {"v": "blue"}), ("in-style", {"v": "blue"}),
    ("selectors", {"v": "q"}),  # [href$='q'] matches
    ("comment", {"v": '"'}), ("script", {"w": '"'}),  # not written as text
    ("unquoted", {"v": "x id=b"}),  # a space ends an unquoted value
    ("pre", {"v": "\nx", "w": "\ny"}), ("table", {"v": " ", "w": ""}), ("text", {"v": "a\x00b", "w": ""}),
    ("text", {"v": "a\rb", "w": " x"}),
]


def test_values_that_parse_or_match_unlike_a_marker_give_the_per_message_bytes() -> None:
    for name, values in EDGES:
        variables = {"v": "a", "w": "b", "items": [], **values}
        _same_as_per_message(_service(TEMPLATES[name]), [{**variables, "v": "k", "w": "k"}, variables])


def test_values_in_text_and_quoted_attributes_get_a_shape() -> None:
    for name in ("text", "quoted", "loop"):
        values: list[str] = []
        skeleton = render_marked(compile_part(TEMPLATES[name], "html"),
                                 {"v": "a", "w": "b", "items": [{"n": "c"}]}, values)
        assert skeleton is not None and build_shape(skeleton, len(values)) is not None, name


_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(st.sampled_from(sorted(TEMPLATES)), st.lists(VARIABLES, min_size=1, max_size=3))
def test_generated_variables_give_the_per_message_bytes(name: str, batch: list[dict[str, Any]]) -> None:
    _same_as_per_message(_service(TEMPLATES[name]), batch)


@_settings
@given(st.lists(VARIABLES, min_size=1, max_size=3))
def test_generated_variables_through_a_layout_give_the_per_message_bytes(batch: list[dict[str, Any]]) -> None:
    s = _service(TEMPLATES["text"], layout='<div class="a" title="{{w}}">{{v}} {{{@content}}}</div>')
    _same_as_per_message(s, batch)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=2, max_size=4), VALUE)
def test_generated_corpus_variables_give_the_per_message_bytes(seeds: list[int], name: str) -> None:
    s = _service(corpus.realistic_html())
    _same_as_per_message(s, [dict(corpus.realistic_variables(i), first_name=name) for i in seeds])


def test_a_batch_of_more_shapes_than_kept_builds_at_most_max_shapes_and_stays_exact() -> None:
    from outpost.templates.inlined import MAX_SHAPES

    s = _service(TEMPLATES["loop"])
    batch = [{"v": "a", "w": f"w{n}", "items": [{"n": str(k)} for k in range(n)]} for n in range(MAX_SHAPES + 4)]
    assert _same_as_per_message(s, batch) == MAX_SHAPES  # one shape per loop length, the first 8 kept


def test_reading_a_hostile_skeleton_is_linear() -> None:
    # An attribute name holding a quote ends css-inline's tag early for the reader; 40,000 "<a z"
    # inside the value that follows were each read to its end by a tag expression that required
    # the closing ">" (8,000 took 8 s, quadratic). Now: about 0.1 s for 200 KB.
    import time

    body = '<p x"y title="' + "<a z " * 40_000 + '">{{v}}</p>'
    values: list[str] = []
    skeleton = render_marked(compile_part("<style>p { color: red }</style>" + body, "html"), {"v": "a"}, values)
    assert skeleton is not None
    started = time.thread_time()
    build_shape(skeleton, len(values))
    assert time.thread_time() - started < 10  # a ceiling only (CPU time, as the other ceilings)


def test_a_batch_refuses_css_that_would_inline_too_much_before_inlining_it() -> None:
    # test_templates_hostile's case (css-inline wrote 70 MB in 7 s) within MAX_SKELETON: 39,204 <p>
    # (274 KB) and 200 `p` rules. A shape is never built for what the per-message path refuses
    # before inlining, so each message is refused as fast as alone.
    import time

    from outpost.errors import InvalidRequestError

    html = ("<style>" + "".join(f"p{{c{i}:1}}" for i in range(200)) + "</style>{{#a}}{{#a}}" + "<p></p>" * 4
            + "{{/a}}{{/a}}")
    s, cache = _service(html), TemplateCache()
    started = time.thread_time()
    for _ in range(3):
        try:
            s.for_send("t", None, {"a": list(range(99))}, cache)
        except InvalidRequestError as exc:
            assert exc.field == "variables" and "CSS" in exc.message
        else:
            raise AssertionError("not refused")
    assert time.thread_time() - started < 2.5  # CPU: 0.15 s here to refuse all three; 5.1 s when inlined
