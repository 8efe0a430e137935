"""The send API over HTTP on the local stack, for the email-correctness items of issue 8:
header names (15), line-breaking characters (16), IDNA 2008 and one suppression key per
mailbox (18). Whatever the API answers 202 to is read back from the store, as the sender reads
it, and built.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from api_rig import call, start_stack, stop_stack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FROM = "Outpost Demo <hello@outpost.test>"
LINE_BREAKS = ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.fixture(scope="module")
def stack():
    st_ = start_stack("127.0.23")
    yield st_
    stop_stack(st_)


def msg(**kw: Any) -> dict[str, Any]:
    return {"from": FROM, "to": ["alice@accept.test"], "subject": "Hi", "text": "Hello", **kw}


def built(message_id: str) -> bytes:
    """The message as the sender would build it from what the API stored."""
    from outpost.bootstrap import message_store
    from outpost.mime import build_message

    store = message_store()
    stored = store.load(message_id)
    assert stored is not None
    req = store.load_request(stored.meta)
    data, _ = build_message(req, message_id, stored.meta.created_ts)
    return data


@pytest.mark.parametrize("char", LINE_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_line_break_is_refused_at_once_naming_the_field(stack, char: str) -> None:
    # Before: only CR, LF (and NUL) were refused; the rest got a 202 and a message that could
    # never be built, retried until it expired.
    for body, field in ((msg(subject=f"a{char}b"), "subject"),
                        (msg(headers={"X-Campaign": f"a{char}b"}), "headers"),
                        (msg(to=[f"Al{char}ice <alice@accept.test>"]), "to[0]"),
                        (msg(reply_to=[f"He{char}lp <help@outpost.test>"]), "reply_to[0]")):
        status, _, out = call(stack, "POST", "/v1/messages", body)
        assert status == 422 and out["error"]["field"] == field, (field, out)


def test_a_header_name_ending_in_a_newline_is_refused(stack) -> None:
    status, _, out = call(stack, "POST", "/v1/messages", msg(headers={"X-Evil\n": "v"}))
    assert status == 422 and out["error"]["field"] == "headers"
    long_name = "X-" + "a" * 75
    status, _, out = call(stack, "POST", "/v1/messages", msg(headers={long_name: "v"}))
    assert status == 422 and out["error"]["field"] == "headers"
    status, _, out = call(stack, "POST", "/v1/messages", msg(headers={long_name[:-1]: "v"}))
    assert status == 202
    assert f"{long_name[:-1]}:".encode() in built(out["id"])


def test_a_batch_answers_each_unbuildable_item_422(stack) -> None:
    status, _, out = call(stack, "POST", "/v1/messages/batch", {"messages": [
        msg(), msg(subject="a\x85b"), msg(headers={"X-A": "a\u2028b"}), msg(to=["x@a\u200db.test"])]})
    assert status == 200, out
    assert [r["status"] for r in out["results"]] == [202, 422, 422, 422]
    assert [r["error"]["field"] for r in out["results"][1:]] == [
        "messages[1].subject", "messages[2].headers", "messages[3].to[0]"]


def test_idna_2008_on_the_api(stack) -> None:
    status, _, out = call(stack, "POST", "/v1/messages", msg(to=["Bob <bob@Faß.de>"]))
    assert status == 202 and out["recipients"][0]["address"] == "bob@faß.de"
    data = built(out["id"])
    assert b"bob@xn--fa-hia.de" in data and b"fass.de" not in data
    for bad in ("bob@a\u200db.test", "bob@☃.net", "bob@xn--a.com"):
        status, _, out = call(stack, "POST", "/v1/messages", msg(to=[bad]))
        assert status == 422 and out["error"]["field"] == "to[0]", (bad, out)
        assert "IDNA 2008" in out["error"]["message"]


def test_one_suppression_per_mailbox_whatever_the_spelling(stack) -> None:
    # Suppressed as an A-label with a quoted local part; sent to as a U-label, unquoted.
    status, _, item = call(stack, "PUT", "/v1/suppressions/" + quote('"Bob"@XN--FA-HIA.DE'),
                           {"reason": "asked us"})
    assert status == 201 and item["address"] == "bob@faß.de", item
    assert call(stack, "PUT", "/v1/suppressions/" + quote("bob@faß.de"))[0] == 200  # the same one
    status, _, out = call(stack, "POST", "/v1/messages", msg(to=["bob@Faß.de", '"carol"@accept.test']))
    assert status == 202
    assert out["recipients"] == [{"address": "bob@faß.de", "status": "suppressed"},
                                 {"address": "carol@accept.test", "status": "queued"}]
    assert call(stack, "GET", "/v1/suppressions/" + quote("BOB@xn--fa-hia.de"))[0] == 200
    assert call(stack, "DELETE", "/v1/suppressions/" + quote('"bob"@faß.de'))[0] == 200
    assert call(stack, "GET", "/v1/suppressions/" + quote("bob@faß.de"))[0] == 404
    status, _, out = call(stack, "PUT", "/v1/suppressions/" + quote("bob@a\u200db.test"))
    assert status == 422 and out["error"]["field"] == "address", out


SUBJECTS = st.lists(st.sampled_from(["a", " ", "\t", "é", "中", "=?", "?=", ":", "\x0b", "\x85",
                                    "\u2028", "\x00", "\x1b", "\U0001f600"]), max_size=20).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=SUBJECTS, value=SUBJECTS, name=SUBJECTS)
def test_whatever_the_api_accepts_builds(stack, subject: str, value: str, name: str) -> None:
    body = msg(subject=subject, headers={"X-Test": value}, to=[f'"{name}" <alice@accept.test>'])
    status, _, out = call(stack, "POST", "/v1/messages", body)
    assert status in (202, 422), out
    if status == 202:
        built(out["id"])
    else:
        assert out["error"]["field"] in ("subject", "headers", "to[0]"), out
