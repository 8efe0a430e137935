"""A template send checks only what its rendering made (models.rendered_trouble), with the
messages the whole request's validation gave, and does not validate the request a second time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from outpost.api.service import SendService
from outpost.models import SendRequest, error_field, rendered_trouble
from outpost.templates.service import TemplateService
from tests.fakes.store import FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.templates import FakeTemplates

CASES = [("ok", "text", "<p>html</p>"), ("x" * 998, None, "h"), ("x" * 999, None, "h"), ("a\x01b", "t", None),
         ("a\u2028b", "t", None), ("ok", "\ud800", None), ("ok", None, "x\udfff"), ("x" * 999, "\ud800", None),
         ("ok", "", "")]


@pytest.mark.parametrize(("subject", "text", "html"), CASES)
def test_the_rendered_checks_say_what_the_whole_validation_says(subject: str, text: str | None,
                                                                 html: str | None) -> None:
    try:
        SendRequest.model_validate({"from": "a@shop.test", "to": "b@ok.test", "subject": subject,
                                    "text": text, "html": html})
        expected = None
    except ValidationError as exc:
        expected = error_field(exc)
    assert rendered_trouble(subject, text, html) == expected


def _service() -> SendService:
    templates = TemplateService(FakeTemplates(), clock=lambda: 1_800_000_000.0)
    templates.create("t", {"name": "t", "subject": "Hi {{x}}", "html": "<p>{{x}}</p>", "text": "{{x}}"})
    return SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),
                       domains=FakeDomains("shop.test"), templates=templates, clock=lambda: 1_800_000_000.0)


def test_a_template_send_validates_the_request_once(monkeypatch: Any) -> None:
    api = _service()
    req = SendRequest.model_validate({"from": "shop@shop.test", "to": "b@ok.test", "template": "t",
                                      "variables": {"x": "Ann"}, "expires_in": 3600, "tags": {"k": "v"}})
    calls: list[Any] = []
    real = SendRequest.model_validate.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(SendRequest, "model_validate",
                        classmethod(lambda cls, *a, **k: calls.append(a) or real(cls, *a, **k)))
    out = api.send_one(req)
    assert calls == []  # was 1: the rendered request validated whole again
    meta = api.store.load(out["id"]).meta  # type: ignore[union-attr]
    stored = api.store.load_request(meta)
    assert (stored.subject, stored.text, stored.html) == ("Hi Ann", "Ann", "<p>Ann</p>")
    assert meta.deliver_until == 1_800_000_000.0 + 3600 and dict(meta.tags) == {"k": "v"}

