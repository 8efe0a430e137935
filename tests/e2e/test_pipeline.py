"""The whole pipeline on the embedded local stack: API request -> queue -> sender -> real MX
over STARTTLS -> recorded outcome; asynchronous DSN -> bounce processor -> recorded bounce.

Every peer is real and listens on loopback: moto's server for SQS/DynamoDB/S3/Secrets Manager,
a DNS server for the test zones, aiosmtpd MX hosts with certificates from a test CA, Postfix
from Debian (when running as root), and the handlers loaded from the template's CodeUri.
"""

from __future__ import annotations

import pytest

from outpost.bootstrap import verp_key
from outpost.bounces.verp import read_return_path
from outpost_local.stack import BOUNCE_DOMAIN, EHLO_HOSTNAME, SENDING_DOMAIN
from outpost_local.verify import (
    dkimpy_results,
    have_mail_dkim,
    have_opendkim,
    mail_dkim,
    opendkim_results,
)

pytestmark = pytest.mark.timeout(180)
FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}


def _send(api, to, subject="Receipt", **extra):
    body = {"from": f"Shop <shop@{SENDING_DOMAIN}>", "to": to, "subject": subject,
            "text": "Thanks for your order.", "html": "<p>Thanks for your <b>order</b>.</p>", **extra}
    status, res = api.call("POST", "/v1/messages", body)
    assert status == 202, res
    return res


def _final(body):
    return all(r["state"] in FINAL for r in body["recipients"])


@pytest.fixture(scope="module")
def delivered(api, local_stack):
    res = _send(api, ["dora@accept.test"], "Order 1001")
    body = api.wait_for(res["id"], _final)
    server = local_stack.mx["accept.test"].server
    got = [r for r in server.received if any("dora@accept.test" in t for t in r.rcpt_tos)]
    assert got, "the accepting MX got nothing"
    return res, body, got[-1]


def test_post_returns_202_with_id_and_queued_recipients(api):
    res = _send(api, ["eve@accept.test", "Frank <frank@accept.test>"])
    assert len(res["id"]) == 26
    assert res["recipients"] == [{"address": "eve@accept.test", "status": "queued"},
                                 {"address": "frank@accept.test", "status": "queued"}]


def test_delivered_over_verified_starttls_with_verp_return_path(delivered, local_stack):
    res, body, received = delivered
    rcpt = body["recipients"][0]
    assert rcpt["state"] == "delivered"
    attempt = rcpt["attempts"][-1]
    assert attempt["code"] == 250 and attempt["mx"] == "mx.accept.test"
    assert attempt["tls"]["verified"] is True and attempt["tls"]["version"].startswith("TLSv1.")
    assert rcpt["remote_id"] and rcpt["remote_id"] in attempt["text"]
    assert received.tls and received.helo == EHLO_HOSTNAME
    rp = read_return_path(verp_key(), received.mail_from, BOUNCE_DOMAIN)
    assert rp is not None and rp.verified and rp.message_id == res["id"] and rp.recipient_index == 0
    # RFC 3461 DSN parameters: ENVID is the message id, failures and delays are asked for.
    assert received.mail_param("ENVID") == res["id"]
    assert received.rcpt_param(received.rcpt_tos[0], "NOTIFY") == "FAILURE,DELAY"


def test_dkim_verifies_with_dkimpy(delivered, local_stack):
    msg = delivered[2].data
    assert msg.count(b"DKIM-Signature:") == 2  # rsa-sha256 and ed25519-sha256
    assert dkimpy_results(local_stack.dns.host, local_stack.dns.port, msg) == [True, True]


@pytest.mark.skipif(not have_mail_dkim(), reason="libmail-dkim-perl not installed")
def test_dkim_verifies_with_perl_mail_dkim(delivered, local_stack):
    sigs, overall = mail_dkim(local_stack.dns.host, local_stack.dns.port, delivered[2].data)
    assert overall == "pass"
    assert {s.algorithm: s.result for s in sigs}["rsa-sha256"] == "pass"


@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")
def test_dkim_verifies_with_opendkim_both_algorithms(delivered, local_stack):
    results = opendkim_results(local_stack.dns.host, local_stack.dns.port, delivered[2].data)
    assert {r["a"]: r["result"] for r in results} == {"rsa-sha256": "pass", "ed25519-sha256": "pass"}


def test_550_user_unknown_bounces_hard_and_suppresses(api):
    res = _send(api, ["ghost@reject.test", "alice@reject.test"], "Password reset")
    body = api.wait_for(res["id"], _final)
    by = {r["address"]: r for r in body["recipients"]}
    ghost = by["ghost@reject.test"]
    assert ghost["state"] == "bounced"
    assert ghost["bounce"]["kind"] == "hard" and ghost["bounce"]["reason"] == "userunknown"
    assert ghost["attempts"][-1]["code"] == 550 and ghost["attempts"][-1]["status"] == "5.1.1"
    assert ghost["attempts"][-1]["command"] == "RCPT"
    assert by["alice@reject.test"]["state"] == "delivered"
    status, supp = api.call("GET", "/v1/suppressions/ghost@reject.test")
    assert status == 200 and supp["reason"] == "userunknown" and supp["message_id"] == res["id"]
    # And the next message to that address is not sent at all.
    again = _send(api, ["ghost@reject.test"], "Again")
    assert again["recipients"][0]["status"] == "suppressed"
    status, _ = api.call("GET", "/v1/suppressions/alice@reject.test")
    assert status == 404


def test_451_greylisted_is_deferred_then_delivered(api):
    res = _send(api, ["gina@greylist.test"], "Alert")
    body = api.wait_for(res["id"], _final, timeout=60)
    r = body["recipients"][0]
    assert r["state"] == "delivered"
    codes = [(a["code"], a["status"]) for a in r["attempts"]]
    assert codes[0] == (451, "4.7.1") and codes[-1][0] == 250 and len(codes) == 2


def test_asynchronous_dsn_turns_delivered_into_bounced(api, local_stack):
    res = _send(api, ["hank@bounce-later.test"], "Welcome")
    body = api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] == "bounced", timeout=60)
    r = body["recipients"][0]
    assert r["attempts"][-1]["code"] == 250  # accepted first...
    assert r["bounce"]["source"] == "dsn" and r["bounce"]["status"] == "5.1.1"  # ...bounced later
    assert "5.1.1" in r["bounce"]["diagnostic"]
    assert r["bounce"]["reporting_mta"] == "mx.bounce-later.test"
    assert r["bounces"] and r["bounces"][0]["verified"] is True
    assert r["bounces"][0]["s3_key"].startswith("inbound/ses/")
    status, supp = api.call("GET", "/v1/suppressions/hank@bounce-later.test")
    assert status == 200 and supp["source"] == "bounce"


@pytest.mark.postfix
def test_postfix_as_independent_mx(api, local_stack):
    if "postfix.test" not in local_stack.mx:
        pytest.skip("Postfix runs only as root with Debian's postfix installed")
    res = _send(api, ["alice@postfix.test", "ghost@postfix.test"], "Via Postfix")
    body = api.wait_for(res["id"], _final)
    by = {r["address"]: r for r in body["recipients"]}
    assert by["alice@postfix.test"]["state"] == "delivered"
    assert by["alice@postfix.test"]["attempts"][-1]["tls"]["verified"] is True
    assert by["ghost@postfix.test"]["state"] == "bounced"
    assert by["ghost@postfix.test"]["bounce"]["status"] == "5.1.1"
    pf = local_stack.mx["postfix.test"].server
    mails = pf.wait_delivered(1, "alice@postfix.test", 20)
    assert any(b"Via Postfix" in m for m in mails)


@pytest.mark.parametrize("body,status,field", [
    (None, 400, "body"),
    ({"to": "a@accept.test", "subject": "x", "text": "y"}, 422, "from"),
    ({"from": f"a@{SENDING_DOMAIN}", "to": "not-an-address", "subject": "x", "text": "y"}, 422, "to[0]"),
    ({"from": f"a@{SENDING_DOMAIN}", "to": "a@accept.test", "subject": "x"}, 422, None),
    ({"from": f"a@{SENDING_DOMAIN}", "to": "a@accept.test", "subject": "x\r\nBcc: evil@x.test", "text": "y"},
     422, "subject"),
    ({"from": "a@unknown-sender.test", "to": "a@accept.test", "subject": "x", "text": "y"}, 403, "from"),
])
def test_bad_input_gets_a_4xx_naming_the_field(api, body, status, field):
    if body is None:
        code, res = api.call("POST", "/v1/messages", raw=b"{not json")
    else:
        code, res = api.call("POST", "/v1/messages", body)
    assert code == status, res
    assert set(res) == {"error"} and res["error"]["field"] == field and res["error"]["message"]


def test_auth_is_required(api):
    code, res = api.call("GET", "/v1/messages/01m8dxc76k8mg2gevvnf5wrjsz", key=None)
    assert code == 401 and res["error"]["code"] == "unauthorized"
    code, res = api.call("GET", "/v1/messages/01m8dxc76k8mg2gevvnf5wrjsz", key="op_wrong")
    assert code == 401


def test_anonymous_callers_are_refused_before_validation(api):
    # Without a key, an invalid body is not validated (no schema details leak): 401 first.
    code, res = api.call("POST", "/v1/messages", {"to": "x"}, key=None)
    assert code == 401 and res["error"]["field"] == "Authorization"
    code, res = api.call("POST", "/v1/messages/batch", {"messages": [{}] * 600}, key="op_nope")
    assert code == 401
