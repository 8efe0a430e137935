"""The sender against real MX hosts on loopback for the email-correctness items of issue 8:
SMTPUTF8 decided per transaction from what is sent (item 17), IDNA 2008 routing (item 18),
and the DKIM over-signing of a message as the sender builds it (item 19).

The rig (sender_rig.py): moto, a real DNS server, aiosmtpd MX hosts with real STARTTLS.
"""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from pydantic import ValidationError
from sender_rig import SENDER_DOMAIN as SENDER
from sender_rig import Rig, commands

from outpost.models import SendRequest
from outpost.records import Suppression
from outpost.signing import dns_name, dns_txt_strings
from outpost_local.verify import have_opendkim, opendkim_results

pytestmark = pytest.mark.timeout(90)


def test_a_utf8_bcc_does_not_make_to_and_cc_need_smtputf8(rig: Rig) -> None:
    # Before: build_message counted the Bcc, so every transaction asked for SMTPUTF8 and the
    # To and Cc recipients at a server without it bounced 5.6.7.
    plain = rig.mx("ascii.test", 2, smtputf8=False)
    utf8 = rig.mx("utf8.test", 3)
    mid = rig.send("bob@ascii.test", cc=["carol@ascii.test"], bcc=["jörg@utf8.test"])
    rig.run(mid)
    to, cc, bcc = rig.rcpts(mid)
    assert (to["state"], cc["state"], bcc["state"]) == ("delivered", "delivered", "delivered"), (
        to.get("last"), cc.get("last"), bcc.get("last"))
    got = plain.wait_for(2)
    assert sorted(g.rcpt_tos[0] for g in got) == ["bob@ascii.test", "carol@ascii.test"]
    assert all(g.mail_param("SMTPUTF8") is None for g in got)
    assert all(g.data.isascii() and b"j\xc3\xb6rg" not in g.data for g in got)  # Bcc not written
    [hidden] = utf8.wait_for(1)
    assert hidden.rcpt_tos == ["jörg@utf8.test"] and hidden.mail_param("SMTPUTF8") == ""
    assert hidden.message["Bcc"] is None and hidden.data.isascii()


def test_a_utf8_address_in_the_headers_still_needs_smtputf8_everywhere(rig: Rig) -> None:
    # The contrast: a UTF-8 local part written in To makes the headers UTF-8 (RFC 6532), so a
    # Cc recipient at a server without SMTPUTF8 cannot get this message (no downgrade).
    rig.mx("utf8.test", 3)
    plain = rig.mx("ascii.test", 2, smtputf8=False)
    mid = rig.send("jörg@utf8.test", cc=["bob@ascii.test"])
    rig.run(mid)
    to, cc = rig.rcpts(mid)
    assert to["state"] == "delivered"
    assert cc["state"] == "bounced" and cc["last"]["status"] == "5.6.7"
    assert plain.received == [] and commands(plain, "MAIL") == []


def test_an_idn_domain_is_routed_by_idna_2008(rig: Rig) -> None:
    # IDNA 2003 maps faß.de to fass.de: another domain, another owner, another MX.
    right = rig.mx("xn--fa-hia.de", 4)
    wrong = rig.mx("fass.de", 5)
    mid = rig.send("Bob <bob@faß.de>")
    rig.run(mid)
    [got] = right.wait_for(1)
    assert got.rcpt_tos == ["bob@xn--fa-hia.de"] and got.mail_param("SMTPUTF8") is None
    assert got.message["To"] is not None and "bob@xn--fa-hia.de" in str(got.message["To"])
    assert rig.rcpt(mid)["state"] == "delivered" and rig.rcpt(mid)["address"] == "bob@faß.de"
    assert wrong.received == [] and wrong.replies("CONNECT") == []


@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed (apt-get install opendkim)")
def test_the_sent_message_over_signs_what_a_reader_sees(rig: Rig) -> None:
    # The message as the sender builds and signs it, received by a real MX and checked by
    # OpenDKIM against the rig's DNS server: it verifies, and a Reply-To, a second Subject or a
    # Cc added on top does not.
    [key] = rig.signer.keys
    rig.dns.add(dns_name(key), "TXT", tuple(dns_txt_strings(key)))
    mx = rig.mx("ok.test", 2)
    mid = rig.send("bob@ok.test", subject="Your receipt")
    rig.run(mid)
    [got] = mx.wait_for(1)
    sig = email.message_from_bytes(got.data, policy=email.policy.compat32)["DKIM-Signature"]
    h = [n.strip().lower() for n in "".join(sig.split()).split("h=")[1].split(";")[0].split(":")]
    for name in ("from", "to", "subject", "date", "message-id", "content-type", "mime-version"):
        assert h.count(name) == 2, (name, h)  # present once, over-signed once
    assert h.count("cc") == 1 and h.count("reply-to") == 1  # absent: signed as null

    def verifies(data: bytes) -> bool:
        results = opendkim_results(rig.dns.host, rig.dns.port, data)
        assert len(results) == 1, results
        return results[0]["result"] == "pass"

    assert verifies(got.data)
    start = got.data.index(b"From: ")
    for added in (b"Reply-To: attacker@evil.example\r\n", b"Subject: Urgent\r\n",
                  b"Cc: attacker@evil.example\r\n"):
        assert not verifies(got.data[:start] + added + got.data[start:]), added


def test_the_suppression_store_keys_every_spelling_of_a_mailbox_alike(rig: Rig) -> None:
    # Records written before addresses were canonical (or by any caller that did not parse)
    # still meet: the store itself keys by addresses.suppression_key.
    now = rig.clock()
    assert rig.suppressions.add(Suppression.new('"Bob"@XN--FA-HIA.DE', now, source="manual",
                                                reason="test", kind="manual"))
    assert not rig.suppressions.add(Suppression.new("bob@faß.de", now, source="manual",
                                                    reason="again", kind="manual"))
    assert rig.suppressions.suppressed(["BOB@faß.de", '"bob"@xn--fa-hia.de', "bob@fass.de"]) == {
        "bob@faß.de", '"bob"@xn--fa-hia.de'}
    got = rig.suppressions.get("bob@xn--fa-hia.de")
    assert got is not None and got.address == "bob@faß.de" and got.reason == "test"
    assert rig.suppressions.remove('"bob"@faß.de') and rig.suppressions.get("bob@faß.de") is None


def _store_raw_request(rig: Rig, mid: str, spec: dict) -> None:
    """Replace the request stored with message `mid` by `spec`, byte for byte: a request
    written by an older version of Outpost, under its rules and in its shape."""
    rig.aws.client("dynamodb").update_item(
        TableName=rig.aws.env["OUTPOST_MESSAGES_TABLE"],
        Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": "META"}},
        UpdateExpression="SET spec = :s", ExpressionAttributeValues={":s": {"S": json.dumps(spec)}})


def test_a_request_stored_under_older_rules_still_goes_out(rig: Rig) -> None:
    # The sender reads its own StoredRequest model, not the API's SendRequest: a request the
    # API accepted before today's caps (long display name, 12 Reply-To, a long header) and
    # in an older shape (no version, `to` as a string, a field this version does not know)
    # still builds, signs and delivers. Only the rules delivery needs (no injection) apply.
    mx = rig.mx("ok.test", 2)
    old = {"from": f"App <app@{SENDER}>", "to": f'"{"N" * 300}" <bob@ok.test>',
           "subject": "stored earlier", "text": "hi",
           "reply_to": [f"r{i}@{SENDER}" for i in range(12)],
           "headers": {"X-" + "a" * 90: "v" * 1500},
           "priority": "high", "template": {"id": "welcome-v0"}}  # fields from an old version
    with pytest.raises(ValidationError):
        SendRequest.model_validate(old)  # refused today, at the API
    mid = rig.send("bob@ok.test")
    _store_raw_request(rig, mid, old)
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "delivered", rig.rcpt(mid).get("last")
    [got] = mx.wait_for(1)
    assert len(got.message["Reply-To"].addresses) == 12
    assert got.message["X-" + "a" * 90].strip() == "v" * 1500  # folded after the long name
    assert got.message["Subject"] == "stored earlier"


def test_a_stored_request_that_could_inject_is_never_sent(rig: Rig) -> None:
    # Lenient is not unchecked: a stored header value with a line break would add a header
    # field at the receiver. The sender defers it (an internal failure is transient) and
    # sends nothing.
    mx = rig.mx("ok.test", 2)
    mid = rig.send("bob@ok.test")
    _store_raw_request(rig, mid, {"from": f"app@{SENDER}", "to": ["bob@ok.test"], "subject": "x",
                                  "text": "hi", "headers": {"X-A": "a\r\nBcc: evil@evil.test"}})
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "deferred"
    assert mx.replies("CONNECT") == []
