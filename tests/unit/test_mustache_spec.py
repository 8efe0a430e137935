"""The official Mustache spec (github.com/mustache/spec, v1.3: interpolation, sections,
inverted, comments), its core cases written out here (no package on the registries ships the
spec's files), run through Outpost's pre-scan, parse and bounded render (templates/mustache.py).

Every case is accepted by the pre-scan and renders as the spec says, except where Outpost
departs on purpose, and each departure is a test of its own below: a variable tag on a name
that resolves to nothing is a 422 naming it (issue 14: "a variable the template uses but the
request lacks is 422"), where the spec renders it empty; the data's root is always an object
(the request's `variables`), so the spec's root-level implicit-iterator cases do not apply;
and `'` is escaped too (`&#x27;`: the spec's escaping cases have none). Partials and delimiter
changes are refused (README), as test_templates.py checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from outpost.errors import InvalidRequestError
from outpost.templates.mustache import Budget, compile_part, render_part
from outpost.templates.service import MAX_RENDERED_BYTES

NESTED = {"a": {"one": 1}, "b": {"two": 2}, "c": {"three": 3, "d": {"four": 4, "five": 5}}}
DEEP = ("{{#a}}\n{{one}}\n{{#b}}\n{{one}}{{two}}{{one}}\n{{#c}}\n{{one}}{{two}}{{three}}{{two}}{{one}}\n"
        "{{#d}}\n{{one}}{{two}}{{three}}{{four}}{{three}}{{two}}{{one}}\n{{#five}}\n"
        "{{one}}{{two}}{{three}}{{four}}{{five}}{{four}}{{three}}{{two}}{{one}}\n"
        "{{one}}{{two}}{{three}}{{four}}{{.}}6{{.}}{{four}}{{three}}{{two}}{{one}}\n"
        "{{one}}{{two}}{{three}}{{four}}{{five}}{{four}}{{three}}{{two}}{{one}}\n{{/five}}\n"
        "{{one}}{{two}}{{three}}{{four}}{{three}}{{two}}{{one}}\n{{/d}}\n{{one}}{{two}}{{three}}{{two}}{{one}}\n"
        "{{/c}}\n{{one}}{{two}}{{one}}\n{{/b}}\n{{one}}\n{{/a}}\n")
LIST_CONTEXT = {"tops": [{"tname": {"upper": "A", "lower": "a"}, "middles": [
    {"mname": "1", "bottoms": [{"bname": "x"}, {"bname": "y"}]}]}]}
PHIL = {"a": {"b": {"c": {"d": {"e": {"name": "Phil"}}}}}, "b": {"c": {"d": {"e": {"name": "Wrong"}}}}}

CASES: list[tuple[str, str, dict[str, Any], str]] = [
    # interpolation.yml
    ("No Interpolation", "Hello from {Mustache}!\n", {}, "Hello from {Mustache}!\n"),
    ("Basic Interpolation", "Hello, {{subject}}!\n", {"subject": "world"}, "Hello, world!\n"),
    ("HTML Escaping", "These characters should be HTML escaped: {{forbidden}}\n", {"forbidden": '& " < >'},
     "These characters should be HTML escaped: &amp; &quot; &lt; &gt;\n"),
    ("Triple Mustache", "These characters should not be HTML escaped: {{{forbidden}}}\n", {"forbidden": '& " < >'},
     'These characters should not be HTML escaped: & " < >\n'),
    ("Ampersand", "These characters should not be HTML escaped: {{&forbidden}}\n", {"forbidden": '& " < >'},
     'These characters should not be HTML escaped: & " < >\n'),
    ("Basic Integer Interpolation", '"{{mph}} miles an hour!"', {"mph": 85}, '"85 miles an hour!"'),
    ("Triple Mustache Integer Interpolation", '"{{{mph}}} miles an hour!"', {"mph": 85}, '"85 miles an hour!"'),
    ("Basic Decimal Interpolation", '"{{power}} jiggawatts!"', {"power": 1.210}, '"1.21 jiggawatts!"'),
    ("Basic Null Interpolation", "I ({{cannot}}) be seen!", {"cannot": None}, "I () be seen!"),
    ("Triple Mustache Null Interpolation", "I ({{{cannot}}}) be seen!", {"cannot": None}, "I () be seen!"),
    ("Dotted Names - Basic Interpolation", '"{{person.name}}" == "{{#person}}{{name}}{{/person}}"',
     {"person": {"name": "Joe"}}, '"Joe" == "Joe"'),
    ("Dotted Names - Triple Mustache Interpolation", '"{{{person.name}}}" == "{{#person}}{{{name}}}{{/person}}"',
     {"person": {"name": "Joe"}}, '"Joe" == "Joe"'),
    ("Dotted Names - Arbitrary Depth", '"{{a.b.c.d.e.name}}" == "Phil"', PHIL, '"Phil" == "Phil"'),
    ("Dotted Names - Initial Resolution", '"{{#a}}{{b.c.d.e.name}}{{/a}}" == "Phil"', PHIL, '"Phil" == "Phil"'),
    ("Interpolation - Surrounding Whitespace", "| {{string}} |", {"string": "---"}, "| --- |"),
    ("Triple Mustache - Surrounding Whitespace", "| {{{string}}} |", {"string": "---"}, "| --- |"),
    ("Interpolation - Standalone", "  {{string}}\n", {"string": "---"}, "  ---\n"),
    ("Triple Mustache - Standalone", "  {{{string}}}\n", {"string": "---"}, "  ---\n"),
    ("Interpolation With Padding", "|{{ string }}|", {"string": "---"}, "|---|"),
    ("Triple Mustache With Padding", "|{{{ string }}}|", {"string": "---"}, "|---|"),
    ("Ampersand With Padding", "|{{& string }}|", {"string": "---"}, "|---|"),
    # sections.yml
    ("Truthy", '"{{#boolean}}This should be rendered.{{/boolean}}"', {"boolean": True},
     '"This should be rendered."'),
    ("Falsey", '"{{#boolean}}This should not be rendered.{{/boolean}}"', {"boolean": False}, '""'),
    ("Null is falsey", '"{{#null}}This should not be rendered.{{/null}}"', {"null": None}, '""'),
    ("Context", '"{{#context}}Hi {{name}}.{{/context}}"', {"context": {"name": "Joe"}}, '"Hi Joe."'),
    ("Parent contexts", '"{{#sec}}{{a}}, {{b}}, {{c.d}}{{/sec}}"',
     {"a": "foo", "b": "wrong", "sec": {"b": "bar"}, "c": {"d": "baz"}}, '"foo, bar, baz"'),
    ("Variable test", '"{{#foo}}{{.}} is {{foo}}{{/foo}}"', {"foo": "bar"}, '"bar is bar"'),
    ("List Contexts", "{{#tops}}{{#middles}}{{tname.lower}}{{mname}}.{{#bottoms}}{{tname.upper}}{{mname}}"
     "{{bname}}.{{/bottoms}}{{/middles}}{{/tops}}", LIST_CONTEXT, "a1.A1x.A1y."),
    ("Deeply Nested Contexts", DEEP, NESTED, "1\n121\n12321\n1234321\n123454321\n12345654321\n123454321\n"
     "1234321\n12321\n121\n1\n"),
    ("List", '"{{#list}}{{item}}{{/list}}"', {"list": [{"item": 1}, {"item": 2}, {"item": 3}]}, '"123"'),
    ("Empty List", '"{{#list}}Yay lists!{{/list}}"', {"list": []}, '""'),
    ("Doubled", "{{#bool}}\n* first\n{{/bool}}\n* {{two}}\n{{#bool}}\n* third\n{{/bool}}\n",
     {"bool": True, "two": "second"}, "* first\n* second\n* third\n"),
    ("Nested (Truthy)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", {"bool": True}, "| A B C D E |"),
    ("Nested (Falsey)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", {"bool": False}, "| A  E |"),
    ("Context Misses", "[{{#missing}}Found key 'missing'!{{/missing}}]", {}, "[]"),
    ("Implicit Iterator - String", '"{{#list}}({{.}}){{/list}}"', {"list": ["a", "b", "c", "d", "e"]},
     '"(a)(b)(c)(d)(e)"'),
    ("Implicit Iterator - Integer", '"{{#list}}({{.}}){{/list}}"', {"list": [1, 2, 3, 4, 5]}, '"(1)(2)(3)(4)(5)"'),
    ("Implicit Iterator - Decimal", '"{{#list}}({{.}}){{/list}}"', {"list": [1.10, 2.20, 3.30, 4.40, 5.50]},
     '"(1.1)(2.2)(3.3)(4.4)(5.5)"'),
    ("Implicit Iterator - Array", '"{{#list}}({{#.}}{{.}}{{/.}}){{/list}}"', {"list": [[1, 2, 3], ["a", "b", "c"]]},
     '"(123)(abc)"'),
    ("Implicit Iterator - HTML Escaping", '"{{#list}}({{.}}){{/list}}"', {"list": ["&", '"', "<", ">"]},
     '"(&amp;)(&quot;)(&lt;)(&gt;)"'),
    ("Implicit Iterator - Triple mustache", '"{{#list}}({{{.}}}){{/list}}"', {"list": ["&", '"', "<", ">"]},
     '"(&)(")(<)(>)"'),
    ("Implicit Iterator - Ampersand", '"{{#list}}({{&.}}){{/list}}"', {"list": ["&", '"', "<", ">"]},
     '"(&)(")(<)(>)"'),
    ("Dotted Names - Truthy", '"{{#a.b.c}}Here{{/a.b.c}}" == "Here"', {"a": {"b": {"c": True}}}, '"Here" == "Here"'),
    ("Dotted Names - Falsey", '"{{#a.b.c}}Here{{/a.b.c}}" == ""', {"a": {"b": {"c": False}}}, '"" == ""'),
    ("Dotted Names - Broken Chains", '"{{#a.b.c}}Here{{/a.b.c}}" == ""', {"a": {}}, '"" == ""'),
    ("Surrounding Whitespace", " | {{#boolean}}\t|\t{{/boolean}} | \n", {"boolean": True}, " | \t|\t | \n"),
    ("Internal Whitespace", " | {{#boolean}} {{! Important Whitespace }}\n {{/boolean}} | \n", {"boolean": True},
     " |  \n  | \n"),
    ("Indented Inline Sections", " {{#boolean}}YES{{/boolean}}\n {{#boolean}}GOOD{{/boolean}}\n", {"boolean": True},
     " YES\n GOOD\n"),
    ("Standalone Lines", "| This Is\n{{#boolean}}\n|\n{{/boolean}}\n| A Line\n", {"boolean": True},
     "| This Is\n|\n| A Line\n"),
    ("Indented Standalone Lines", "| This Is\n  {{#boolean}}\n|\n  {{/boolean}}\n| A Line\n", {"boolean": True},
     "| This Is\n|\n| A Line\n"),
    ("Standalone Line Endings", "|\r\n{{#boolean}}\r\n{{/boolean}}\r\n|", {"boolean": True}, "|\r\n|"),
    ("Standalone Without Previous Line", "  {{#boolean}}\n#{{/boolean}}\n/", {"boolean": True}, "#\n/"),
    ("Standalone Without Newline", "#{{#boolean}}\n/\n  {{/boolean}}", {"boolean": True}, "#\n/\n"),
    ("Padding", "|{{# boolean }}={{/ boolean }}|", {"boolean": True}, "|=|"),
    # inverted.yml
    ("Inverted Falsey", '"{{^boolean}}This should be rendered.{{/boolean}}"', {"boolean": False},
     '"This should be rendered."'),
    ("Inverted Truthy", '"{{^boolean}}This should not be rendered.{{/boolean}}"', {"boolean": True}, '""'),
    ("Inverted Null is falsey", '"{{^null}}This should be rendered.{{/null}}"', {"null": None},
     '"This should be rendered."'),
    ("Inverted Context", '"{{^context}}Hi {{name}}.{{/context}}"', {"context": {"name": "Joe"}}, '""'),
    ("Inverted List", '"{{^list}}{{n}}{{/list}}"', {"list": [{"n": 1}, {"n": 2}, {"n": 3}]}, '""'),
    ("Inverted Empty List", '"{{^list}}Yay lists!{{/list}}"', {"list": []}, '"Yay lists!"'),
    ("Inverted Doubled", "{{^bool}}\n* first\n{{/bool}}\n* {{two}}\n{{^bool}}\n* third\n{{/bool}}\n",
     {"bool": False, "two": "second"}, "* first\n* second\n* third\n"),
    ("Inverted Nested (Falsey)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", {"bool": False},
     "| A B C D E |"),
    ("Inverted Nested (Truthy)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", {"bool": True}, "| A  E |"),
    ("Inverted Context Misses", "[{{^missing}}Found key 'missing'!{{/missing}}]", {}, "[Found key 'missing'!]"),
    ("Inverted Dotted Names - Truthy", '"{{^a.b.c}}Not Here{{/a.b.c}}" == ""', {"a": {"b": {"c": True}}},
     '"" == ""'),
    ("Inverted Dotted Names - Falsey", '"{{^a.b.c}}Not Here{{/a.b.c}}" == "Not Here"', {"a": {"b": {"c": False}}},
     '"Not Here" == "Not Here"'),
    ("Inverted Dotted Names - Broken Chains", '"{{^a.b.c}}Not Here{{/a.b.c}}" == "Not Here"', {"a": {}},
     '"Not Here" == "Not Here"'),
    ("Inverted Surrounding Whitespace", " | {{^boolean}}\t|\t{{/boolean}} | \n", {"boolean": False},
     " | \t|\t | \n"),
    ("Inverted Standalone Lines", "| This Is\n{{^boolean}}\n|\n{{/boolean}}\n| A Line\n", {"boolean": False},
     "| This Is\n|\n| A Line\n"),
    ("Inverted Standalone Line Endings", "|\r\n{{^boolean}}\r\n{{/boolean}}\r\n|", {"boolean": False}, "|\r\n|"),
    ("Inverted Padding", "|{{^ boolean }}={{/ boolean }}|", {"boolean": False}, "|=|"),
    # comments.yml
    ("Comment Inline", "12345{{! Comment Block! }}67890", {}, "1234567890"),
    ("Comment Multiline", "12345{{!\n  This is a\n  multi-line comment...\n}}67890\n", {}, "1234567890\n"),
    ("Comment Standalone", "Begin.\n{{! Comment Block! }}\nEnd.\n", {}, "Begin.\nEnd.\n"),
    ("Comment Indented Standalone", "Begin.\n  {{! Indented Comment Block! }}\nEnd.\n", {}, "Begin.\nEnd.\n"),
    ("Comment Standalone Line Endings", "|\r\n{{! Standalone Comment }}\r\n|", {}, "|\r\n|"),
    ("Comment Standalone Without Previous Line", "  {{! I'm Still Standalone }}\n!", {}, "!"),
    ("Comment Standalone Without Newline", "!\n  {{! I'm Still Standalone }}", {}, "!\n"),
    ("Comment Multiline Standalone", "Begin.\n{{!\nSomething's going on here...\n}}\nEnd.\n", {}, "Begin.\nEnd.\n"),
    ("Comment Indented Multiline Standalone", "Begin.\n  {{!\n    Something's going on here...\n  }}\nEnd.\n", {},
     "Begin.\nEnd.\n"),
    ("Comment Indented Inline", "  12 {{! 34 }}\n", {}, "  12 \n"),
    ("Comment Surrounding Whitespace", "12345 {{! Comment Block! }} 67890", {}, "12345  67890"),
    ("Comment Variable Name Collision", "comments never show: >{{! comment }}<",
     {"! comment": 1, "!": 2, "!comment": 3, "comment": 4}, "comments never show: ><"),
]


def _render(template: str, data: dict[str, Any], *, html: bool = True) -> str:
    return render_part(compile_part(template, "html"), data, Budget(MAX_RENDERED_BYTES), html=html)


@pytest.mark.parametrize(("template", "data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_spec(template: str, data: dict[str, Any], expected: str) -> None:
    assert _render(template, data) == expected


@pytest.mark.parametrize(("template", "data", "field"), [
    ("I ({{cannot}}) be seen!", {}, "variables.cannot"),  # spec: Basic Context Miss Interpolation -> "I () be seen!"
    ("I ({{{cannot}}}) be seen!", {}, "variables.cannot"),  # Triple Mustache Context Miss Interpolation
    ('"{{a.b.c}}" == ""', {"a": {}}, "variables.a.b.c"),  # Dotted Names - Broken Chains
    ('"{{a.b.c.name}}" == ""', {"a": {"b": {}}, "c": {"name": "Jim"}}, "variables.a.b.c.name"),  # Broken Chain Res.
    ('"{{#a}}{{b.c}}{{/a}}"', {"a": {"b": {}}, "b": {"c": "ERROR"}}, "variables.b.c"),  # Context Precedence
])
def test_a_name_that_resolves_to_nothing_is_a_422_where_the_spec_renders_it_empty(
        template: str, data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        _render(template, data)
    assert exc.value.field == field


def test_the_apostrophe_is_escaped_too() -> None:
    assert _render("{{x}}", {"x": "it's"}) == "it&#x27;s"  # spec: unspecified; attribute-safe in '...'
