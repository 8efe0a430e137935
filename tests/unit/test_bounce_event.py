"""The bounce processor's one call: a Lambda event (SES receipt rule or S3) -> the handler's
answer, with the SES prefix given once at construction (bootstrap reads the setting), built
with the in-memory fakes."""

from __future__ import annotations

from outpost.bounces.service import BounceService
from tests.fakes.store import FakeClock, FakeMessages, FakeSuppressions


def _service(store: FakeMessages, **kw: str) -> BounceService:
    return BounceService(store=store, suppressions=FakeSuppressions(), verp_key=b"k",
                         bounce_domain="bounces.shop.test", clock=FakeClock(), **kw)


def _ses(message_id: str) -> dict:
    return {"Records": [{"eventSource": "aws:ses", "ses": {
        "mail": {"messageId": message_id, "destination": ["x@bounces.shop.test"]},
        "receipt": {"recipients": ["x@bounces.shop.test"]}}}]}


def test_an_ses_event_is_read_under_the_configured_prefix_and_answered_as_results() -> None:
    store = FakeMessages()
    store.inbound["mail/in/abc"] = b"Subject: hello\r\n\r\nnot a report\r\n"
    out = _service(store, ses_prefix="mail/in/").handle(_ses("abc"))
    assert [r["result"] for r in out["results"]] == ["unparsed"]
    # under the default prefix the same event finds nothing: the setting is what was used
    assert [r["result"] for r in _service(store).handle(_ses("abc"))["results"]] == ["missing"]


def test_an_s3_event_names_its_key_and_an_unknown_source_is_ignored() -> None:
    store = FakeMessages()
    out = _service(store).handle({"Records": [
        {"eventSource": "aws:s3", "s3": {"object": {"key": "inbound/a%40b"}}},
        {"eventSource": "aws:sqs"}]})
    assert [r["result"] for r in out["results"]] == ["missing"]
