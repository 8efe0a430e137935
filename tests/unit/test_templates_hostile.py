"""Hostile requests to the template routes and to template sends, through the real resolver
(api/routes.py build_app) with in-memory fakes: each is answered 4xx naming what is wrong,
never 503 (the catch-all for an exception nobody anticipated)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.api.auth import KeyRing, key_hash
from outpost.api.routes import build_app
from outpost.api.service import QueryService, SendService
from outpost.records import ApiKey
from outpost.templates.service import TemplateService
from tests.fakes.store import FakeApiKeys, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.templates import FakeTemplates

FROM = "Shop <shop@shop.test>"
FINE = '{"x": "fine"}'


@pytest.fixture
def hit() -> Any:
    keys = FakeApiKeys(ApiKey(key_hash=key_hash("op_all"), key_id="k1", scopes=("admin", "read", "send"), name="t"))
    templates = TemplateService(FakeTemplates(), clock=lambda: 1_800_000_000.0)
    sender = SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),  # type: ignore[arg-type]
                         domains=FakeDomains("shop.test"), templates=templates, clock=lambda: 1_800_000_000.0)
    app = build_app(keys=KeyRing(keys), sender=sender, queries=QueryService(store=None, suppressions=None),  # type: ignore[arg-type]
                    templates=templates)

    def call(method: str, path: str, raw: str | None = None) -> tuple[int, dict]:
        ev = {"httpMethod": method, "path": path, "resource": "/{proxy+}",
              "headers": {"Authorization": "Bearer op_all", "Content-Type": "application/json"},
              "body": raw, "isBase64Encoded": False, "requestContext": {"stage": "prod"},
              "queryStringParameters": None, "multiValueQueryStringParameters": None}
        res = app.resolve(ev, None)
        return res["statusCode"], json.loads(res["body"])

    status, body = call("POST", "/v1/templates", json.dumps(
        {"alias": "t", "name": "t", "subject": "Hi {{x}}", "html": "<p>{{x}}</p>", "text": "{{x}}"}))
    assert status == 201, body
    return call


def _send(variables: str) -> str:
    return f'{{"from": "{FROM}", "to": "a@b.test", "template": "t", "variables": {variables}}}'


@pytest.mark.parametrize("value", ['"\\ud800"', '"a\\udfffb"', '["\\ud83d"]'])
def test_a_lone_surrogate_in_a_value_is_a_422_naming_it(hit: Any, value: str) -> None:
    """JSON's \\uD800 escape decodes to a lone surrogate, which has no UTF-8 form: counting the
    bytes written raised UnicodeEncodeError (503)."""
    body = f'{{"x": {value}}}' if not value.startswith("[") else f'{{"x": "ok", "l": {value}}}'
    template = "/v1/templates/t/render"
    if value.startswith("["):  # written through a section's {{.}}
        assert hit("PUT", "/v1/templates/t", '{"html": "{{#l}}{{.}}{{/l}}", "text": null}')[0] == 200
    status, out = hit("POST", template, f'{{"variables": {body}}}')
    assert status == 422 and out["error"]["field"] in ("variables.x", "variables.."), out
    assert "surrogate" in out["error"]["message"]
    status, out = hit("POST", "/v1/messages", _send(body))
    assert status == 422 and "surrogate" in out["error"]["message"], out
    status, out = hit("POST", "/v1/messages/batch", f'{{"messages": [{_send(body)}, {_send(FINE)}]}}')
    assert status == 200, out
    first, second = out["results"] if "results" in out else out["messages"]
    assert first["error"]["code"] == "validation_error" and "surrogate" in first["error"]["message"], first
    assert "id" in second, second


@pytest.mark.parametrize("number", ["1" * 4301, "-" + "9" * 5000, "NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_a_number_json_cannot_carry_is_invalid_json(hit: Any, number: str) -> None:
    """Python's json.loads accepts NaN and Infinity (not JSON: RFC 8259 §6), reads 1e400 as
    infinity, and raises a plain ValueError for an integer of more than 4,300 digits (the
    interpreter's int/str limit), which reached the catch-all (503)."""
    for method, path, raw in (("POST", "/v1/templates/t/render", f'{{"variables": {{"x": {number}}}}}'),
                              ("POST", "/v1/templates/t/render", f'{{"variables": {{"x": 1}}, "version": {number}}}'),
                              ("POST", "/v1/messages", _send(f'{{"x": {number}}}'))):
        status, out = hit(method, path, raw)
        assert (status, out["error"]["code"], out["error"]["field"]) == (400, "invalid_json", "body"), (path, out)


def test_large_but_finite_numbers_still_render(hit: Any) -> None:
    assert hit("PUT", "/v1/templates/t", '{"subject": "Hi"}')[0] == 200  # 4,300 digits: not a subject
    status, out = hit("POST", "/v1/templates/t/render", f'{{"variables": {{"x": {"9" * 4300}}}}}')
    assert status == 200 and out["text"] == "9" * 4300, out
    status, out = hit("POST", "/v1/templates/t/render", '{"variables": {"x": -1.5e308}}')
    assert status == 200 and out["text"] == "-1.5e+308", out


# ---- bounded work: what the byte and pass counts did not see -------------------------------------
def _timed_render(html: str, variables: dict[str, Any], **fields: Any) -> tuple[float, Any]:
    import time

    from outpost.errors import InvalidRequestError

    s = TemplateService(FakeTemplates(), clock=lambda: 1_800_000_000.0)
    s.create("w", {"name": "w", "subject": "s", "html": html, **fields})
    t = time.thread_time()  # CPU time: the work, which a loaded machine does not stretch
    try:
        out: Any = s.render("w", variables)
    except InvalidRequestError as exc:
        out = exc
    return time.thread_time() - t, out


@pytest.mark.parametrize("tag", ["{{x}}", "{{! c }}", "{{^x}}{{/x}}"])
def test_tags_that_write_nothing_are_counted_too(tag: str) -> None:
    """10,000 tags writing nothing inside two loops over 20 items: 4,000,000 tag evaluations
    (5 s here; 130 s with 99 items) counted as 0 bytes and 420 passes. Each pass now counts
    the nodes of its section (MAX_RENDER_STEPS)."""
    took, out = _timed_render("{{#a}}{{#a}}" + tag * 10_000 + "{{/a}}{{/a}}", {"a": list(range(20)), "x": ""})
    assert getattr(out, "field", None) == "variables" and "steps" in out.message, out
    assert took < 3.0, took  # refused at the step cap (0.3 s here), not run to the end
    took, out = _timed_render("{{#a}}" + tag * 10 + "{{/a}}", {"a": list(range(10_000)) , "x": ""})
    assert isinstance(out, dict), out  # 10,000 items x 10 tags: an invoice's loop, well within


def test_css_inlining_is_counted_before_it_runs() -> None:
    """A 400-byte template and 300 bytes of variables: 196,020 <p> elements (1.4 MB, within
    the byte budget) times 50 `p` rules made css-inline write 70 MB in 7 s (740 MB resident;
    the API function has 512 MB and 10 s). The bytes inlining can add are bounded first."""
    html = "<style>" + "".join(f"p{{c{i}:1}}" for i in range(50)) + "</style>{{#a}}{{#a}}" + "<p></p>" * 20 \
        + "{{/a}}{{/a}}"
    took, out = _timed_render(html, {"a": list(range(99))})
    assert getattr(out, "field", None) == "variables" and "CSS" in out.message, out
    assert took < 5.0, took  # the render and the bound (1.3 s here); inlining took 7 s and 740 MB
    took, out = _timed_render(html, {"a": list(range(5))})  # 500 elements: inlined as before
    assert isinstance(out, dict) and out["html"].count('<p style="c0: 1;') == 500, out


@pytest.mark.parametrize("shape", ["<a b", '<style>"', '<p style="\\', "<style>/*", '<p a="', "<a /", "<p style=x ",
                                   "<style>{}", "<style>", "<style></style ", "<p class=x>"])
def test_the_css_passes_are_linear_on_hostile_html(shape: str) -> None:
    """The quote rewrite and the inlining bound read a rendered html of up to 2 MB: 1.6 MB of
    each shape in a few tenths of a second here (a quadratic scan would take minutes)."""
    import time

    from outpost.templates.css import inlined_bytes_bound, without_double_quotes_in_css

    html = shape * (1_600_000 // len(shape))
    t = time.thread_time()
    without_double_quotes_in_css(html)
    inlined_bytes_bound(html + "<style>p{a:b}</style>")
    assert time.thread_time() - t < 10.0


def test_the_preview_refuses_a_subject_the_send_refuses(hit: Any) -> None:
    """The preview showed a 2,003-character subject (200) that the send then refused (422)."""
    for path, body in (("/v1/templates/t/render", '{"variables": {"x": "%s"}}'),
                       ("/v1/messages", _send('{"x": "%s"}'))):
        status, out = hit("POST", path, body.replace("%s", "a" * 2000))
        assert (status, out["error"]["field"]) == (422, "variables"), out
        assert "998" in out["error"]["message"], out
    status, out = hit("POST", "/v1/templates/t/render", '{"variables": {"x": "%s"}}'.replace("%s", "a" * 995))
    assert status == 200 and len(out["subject"]) == 998, out
