"""Issue 14 item 4, the sandbox, end to end on its own embedded local stack: the real API, the
real sender (prepare and DKIM-sign, claim, attempt records), the real S3 notification on
inbound/s3/ invoking the real bounce processor and parser, DynamoDB Local, the events function
on MessagesTable's stream (GET /v1/events), and real MX hosts that must stay untouched.

Every simulator address ends as documented, with the records, suppressions and events real mail
gets; a test-mode key never reaches a real MX (over HTTP and over SMTP submission); a live key
to a real address still does; simulated outcomes feed no reputation counts.
"""

from __future__ import annotations

import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table, message_store, reputation, suppression_store
from outpost.reputation import key_scope
from outpost.sandbox import SIMULATOR_DOMAIN
from outpost_local.mx import Accept, ConnectionCap
from outpost_local.stack import SENDING_DOMAIN, LocalStack
from tests.conftest import Api
from tests.integration.api_rig import start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

FINAL = {"delivered", "bounced", "complained", "suppressed", "expired", "failed"}
REAL = "sandbox-real.test"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    s = start_stack("127.0.44")
    # A real MX for a real domain, counting every connection it gets.
    s._add_mx(REAL, 30, "accepts, counts connections", [ConnectionCap(None), Accept()])
    try:
        yield s
    finally:
        stop_stack(s)


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Api:
    return Api(stack.api.url, stack.api_key)


def _key(mode: str = "live") -> tuple[str, str]:
    """A new key of this mode: (the key, its key_id)."""
    key, record = KeyRing(api_keys_table()).create(f"sandbox {mode}", ["send", "read"], mode=mode)
    assert record["mode"] == mode
    return key, record["key_id"]


def _sim(name: str) -> str:
    return f"{name}+{secrets.token_hex(4)}@{SIMULATOR_DOMAIN}"


def _send(api: Api, to: list[str], key: str = "default") -> dict:
    status, res = api.call("POST", "/v1/messages", {"from": f"app@{SENDING_DOMAIN}", "to": to,
                                                    "subject": "sandbox", "text": "hello"}, key=key)
    assert status == 202, res
    return res


def _final(api: Api, mid: str, want: dict[str, str], timeout: float = 120) -> dict:
    """The message once every recipient is in the state `want` names for it."""
    return api.wait_for(mid, lambda b: all(r["state"] == want[r["address"]] for r in b["recipients"]),
                        timeout=timeout)


def _events(api: Api, mid: str) -> dict[str, list[str]]:
    """The event types of each recipient from GET /v1/events, oldest first."""
    status, body = api.call("GET", f"/v1/events?message_id={mid}&limit=100")
    assert status == 200, body
    out: dict[str, list[str]] = {}
    for e in reversed(body["items"]):
        out.setdefault(e["data"]["recipient"], []).append(e["type"])
    return out


def _connections(stack: LocalStack) -> int:
    return stack.mx[REAL].server.behaviours[0].connections


@pytest.fixture(scope="module")
def simulated(stack: LocalStack, api: Api) -> tuple[dict[str, str], dict, dict]:
    """One message to every simulator address (live key), followed to its final states."""
    addrs = {n: _sim(n) for n in ("delivered", "bounce", "softbounce", "complaint", "autoreply",
                                  "suppressed", "whoever")}
    res = _send(api, list(addrs.values()))
    want = {addrs["delivered"]: "delivered", addrs["bounce"]: "bounced", addrs["softbounce"]: "delivered",
            addrs["complaint"]: "complained", addrs["autoreply"]: "delivered",
            addrs["suppressed"]: "suppressed", addrs["whoever"]: "delivered"}
    body = _final(api, res["id"], want)
    return addrs, res, body


def test_accepted_with_suppressed_refused_at_once(simulated) -> None:
    addrs, res, _ = simulated
    status = {r["address"]: r["status"] for r in res["recipients"]}
    assert status[addrs["suppressed"]] == "suppressed"
    assert {s for a, s in status.items() if a != addrs["suppressed"]} == {"queued"}


def test_delivered_is_a_250_with_a_remote_id_and_no_mx(simulated) -> None:
    addrs, _, body = simulated
    by = {r["address"]: r for r in body["recipients"]}
    for name in ("delivered", "whoever"):
        r = by[addrs[name]]
        assert r["state"] == "delivered" and r["remote_id"].startswith("SIM"), r
        assert [a["outcome"] for a in r["attempts"]] == ["delivered"]
        assert r["attempts"][0]["mx"] == SIMULATOR_DOMAIN and r["attempts"][0]["code"] == 250
        assert "ip" not in r["attempts"][0] and "tls" not in r["attempts"][0]  # no socket
    assert body["mode"] == "live"


def test_bounce_is_a_real_dsn_through_the_bounce_processor(simulated, api) -> None:
    addrs, res, body = simulated
    r = next(x for x in body["recipients"] if x["address"] == addrs["bounce"])
    assert r["state"] == "bounced"
    assert r["bounce"]["source"] == "dsn" and r["bounce"]["status"] == "5.1.1" and r["bounce"]["kind"] == "hard"
    assert r["bounce"]["s3_key"].startswith("inbound/s3/simulator/")
    [b] = r["bounces"]
    assert b["type"] == "bounce" and b["verified"] is True and b["reporting_mta"] == SIMULATOR_DOMAIN
    supp = suppression_store().get(addrs["bounce"])
    assert supp is not None and supp.source == "bounce" and supp.message_id == res["id"]
    status, listed = api.call("GET", f"/v1/bounces?recipient={quote(addrs['bounce'])}")
    assert status == 200 and [i["status"] for i in listed["items"]] == ["5.1.1"]


def test_softbounce_defers_once_then_delivers(simulated) -> None:
    addrs, _, body = simulated
    r = next(x for x in body["recipients"] if x["address"] == addrs["softbounce"])
    assert [a["outcome"] for a in r["attempts"]] == ["transient", "delivered"]
    assert r["attempts"][0]["code"] == 451 and r["attempts"][0]["status"] == "4.2.0"
    assert suppression_store().get(addrs["softbounce"]) is None


def test_complaint_is_a_real_arf_report(simulated) -> None:
    addrs, res, body = simulated
    r = next(x for x in body["recipients"] if x["address"] == addrs["complaint"])
    assert r["state"] == "complained" and r["bounce"]["source"] == "feedback"
    assert [b["type"] for b in r["bounces"]] == ["complaint"]
    supp = suppression_store().get(addrs["complaint"])
    assert supp is not None and supp.source == "complaint" and supp.message_id == res["id"]


def test_autoreply_is_kept_as_an_autoreply_not_a_bounce(simulated) -> None:
    addrs, res, body = simulated
    r = next(x for x in body["recipients"] if x["address"] == addrs["autoreply"])
    assert r["state"] == "delivered" and r["bounces"] == []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kept = [o for o in message_store().orphans("autoreply") if res["id"] in o.s3_key]
        if kept:
            break
        time.sleep(0.5)
    assert kept and kept[0].family == "rfc3834", "the auto-reply was not recorded as one"
    assert suppression_store().get(addrs["autoreply"]) is None


def test_events_happen_as_for_real_mail(simulated, api) -> None:
    """Exactly the events real mail gets (tests/e2e/test_events.py): one per state change, in order."""
    addrs, res, _ = simulated
    want = {addrs["delivered"]: ["message.queued", "message.delivered"],
            addrs["bounce"]: ["message.queued", "message.delivered", "message.bounced"],
            addrs["softbounce"]: ["message.queued", "message.deferred", "message.delivered"],
            addrs["complaint"]: ["message.queued", "message.delivered", "message.complained"],
            addrs["autoreply"]: ["message.queued", "message.delivered"],
            addrs["suppressed"]: ["message.suppressed"]}  # created final: no queued
    deadline = time.monotonic() + 90
    got: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        got = _events(api, res["id"])
        if all(got.get(a) == w for a, w in want.items()):
            break
        time.sleep(0.5)
    time.sleep(1.0)  # and no duplicate after
    got = _events(api, res["id"])
    assert {a: got.get(a) for a in want} == want


def test_test_key_never_reaches_a_real_mx(stack, api) -> None:
    key, _ = _key("test")
    before = _connections(stack)
    real, bounce = f"someone-{secrets.token_hex(3)}@{REAL}", _sim("bounce")
    res = _send(api, [real, bounce], key=key)
    body = _final(api, res["id"], {real: "delivered", bounce: "bounced"})
    assert body["mode"] == "test"
    r = next(x for x in body["recipients"] if x["address"] == real)
    assert r["remote_id"].startswith("SIM") and r["attempts"][0]["mx"] == SIMULATOR_DOMAIN
    time.sleep(1.0)  # anything late would show up now
    assert _connections(stack) == before, "a test-mode message reached the real MX"
    status, page = api.call("GET", f"/v1/messages?recipient={quote(real)}")
    assert status == 200 and [i["mode"] for i in page["items"]] == ["test"]


def test_test_key_over_smtp_submission_is_simulated(stack, api) -> None:
    key, _ = _key("test")
    before = _connections(stack)
    real = f"smtp-{secrets.token_hex(3)}@{REAL}"
    data = (f"From: App <app@{SENDING_DOMAIN}>\r\nTo: {real}\r\nSubject: sandbox smtp\r\n\r\nhi\r\n").encode()
    ctx = ssl.create_default_context(cafile=str(stack.pki.ca_bundle))
    with smtplib.SMTP(stack.config.ip(1), stack.submission.ports["starttls"], timeout=60) as s:
        s.starttls(context=ctx)
        s.login("outpost", key)
        assert s.sendmail(f"app@{SENDING_DOMAIN}", [real], data) == {}  # no recipient refused
    deadline = time.monotonic() + 60
    items: list[dict] = []
    while time.monotonic() < deadline and not items:
        status, page = api.call("GET", f"/v1/messages?recipient={quote(real)}")
        items = page["items"] if status == 200 else []
        time.sleep(0.3)
    assert items and items[0]["mode"] == "test", items
    body = _final(api, items[0]["id"], {real: "delivered"})
    assert body["mode"] == "test" and body["recipients"][0]["remote_id"].startswith("SIM")
    assert _connections(stack) == before, "a test-mode message reached the real MX"


def test_live_key_to_a_real_address_still_goes_to_the_real_mx(stack, api) -> None:
    before = _connections(stack)
    real = f"live-{secrets.token_hex(3)}@{REAL}"
    res = _send(api, [real], key=_key("live")[0])
    body = _final(api, res["id"], {real: "delivered"})
    assert body["mode"] == "live" and body["recipients"][0]["attempts"][0]["mx"] == f"mx.{REAL}"
    assert _connections(stack) > before
    assert any(real in r.rcpt_tos for r in stack.mx[REAL].server.received)


def _counts(key_id: str) -> dict[str, int]:
    out = {"sent": 0, "hard": 0, "complaints": 0}
    for c in reputation().store.counts_since(key_scope(key_id), "2000010100"):
        out = {k: out[k] + getattr(c, k) for k in out}
    return out


def test_simulated_outcomes_do_not_feed_the_reputation_breaker(stack, api) -> None:
    key, kid = _key("live")
    b, c, d = _sim("bounce"), _sim("complaint"), _sim("delivered")
    res = _send(api, [b, c, d], key=key)
    _final(api, res["id"], {b: "bounced", c: "complained", d: "delivered"})
    time.sleep(1.0)  # the bounce processor counts right after it records
    assert _counts(kid) == {"sent": 0, "hard": 0, "complaints": 0}
    # The control: the same key's real hard bounce (550 5.1.1 at RCPT) is counted.
    bad = f"nobody-{secrets.token_hex(3)}@reject.test"
    res = _send(api, [bad], key=key)
    _final(api, res["id"], {bad: "bounced"})
    deadline = time.monotonic() + 30  # the sender counts right after it records the bounce
    while _counts(kid)["hard"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    # Only the real one: the simulated bounce and complaint (long recorded by now) are not there.
    assert _counts(kid) == {"sent": 1, "hard": 1, "complaints": 0}


def test_the_admin_cli_creates_and_lists_test_keys(stack, api) -> None:
    import io
    import json

    from outpost_admin import main

    out = io.StringIO()
    assert main(["keys", "create", "--name", "ci", "--scope", "send", "--scope", "read", "--mode", "test"],
                out=out) == 0
    created = json.loads(out.getvalue())
    assert created["mode"] == "test"
    out = io.StringIO()
    assert main(["keys", "list"], out=out) == 0
    modes = {k["key_id"]: k["mode"] for k in json.loads(out.getvalue())}
    assert modes[created["key_id"]] == "test" and set(modes.values()) == {"live", "test"}
    with pytest.raises(SystemExit):  # argparse refuses an unknown mode
        main(["keys", "create", "--name", "x", "--scope", "send", "--mode", "sandbox"], out=io.StringIO())
    real = f"cli-{secrets.token_hex(3)}@{REAL}"
    before = _connections(stack)
    res = _send(api, [real], key=created["key"])
    body = _final(api, res["id"], {real: "delivered"})
    assert body["mode"] == "test" and _connections(stack) == before
