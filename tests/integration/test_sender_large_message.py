"""A multi-MB message through the real sender (issue 8 item 13): built with its attachment
base64-encoded straight into the output, DKIM-signed with the body hashed in pieces, sent in
pieces to a real MX on loopback; what the MX received verifies with dkimpy, Mail::DKIM (RSA)
and OpenDKIM (RSA and Ed25519), keys fetched from the rig's real DNS server, and the
attachment comes back out byte for byte."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy

import pytest
from sender_rig import SENDER_DOMAIN, Aws, Rig

from outpost.signing import ED25519, RSA, Signer, dns_name, dns_txt_strings, generate_key
from outpost_local.pki import TestPki
from outpost_local.verify import dkimpy_results, have_mail_dkim, have_opendkim, mail_dkim, opendkim_results

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(name="big")
def big_fixture(aws: Aws, pki: TestPki) -> Iterator[tuple[Rig, bytes, bytes]]:
    keys = [generate_key(SENDER_DOMAIN, "big-rsa", RSA), generate_key(SENDER_DOMAIN, "big-ed", ED25519)]
    rig = Rig(aws, pki, Signer(keys))
    try:
        for k in keys:
            rig.dns.add(dns_name(k), "TXT", tuple(dns_txt_strings(k)))
        mx = rig.mx("big.test", 2)
        payload = os.urandom(4 << 20)
        text = "Trailing blanks \t  \n" * 20_000 + "tabs\t\tand   runs \n" * 20_000 + "\n" * 2000
        mid = rig.send("someone@big.test", text=text, attachments=[
            {"filename": "big.bin", "content_type": "application/octet-stream",
             "content": base64.b64encode(payload).decode()}])
        assert rig.run(mid) == {"batchItemFailures": []}
        assert rig.rcpt(mid)["state"] == "delivered"
        [got] = mx.wait_for(1)
        assert len(got.data) > 6_000_000
        yield rig, got.data, payload
    finally:
        rig.stop()


def test_a_large_message_arrives_intact_and_verifies(big: tuple[Rig, bytes, bytes]) -> None:
    rig, data, payload = big
    parsed = message_from_bytes(data, policy=email_policy.SMTP)
    [attachment] = [p for p in parsed.walk() if p.get_filename() == "big.bin"]
    assert attachment.get_payload(decode=True) == payload
    assert dkimpy_results(rig.dns.host, rig.dns.port, data) == [True, True]  # RSA, Ed25519
    if have_opendkim():
        results = opendkim_results(rig.dns.host, rig.dns.port, data)
        assert {r["a"]: r["result"] for r in results} == {"rsa-sha256": "pass", "ed25519-sha256": "pass"}, results
    if have_mail_dkim():
        sigs, overall = mail_dkim(rig.dns.host, rig.dns.port, data)
        assert overall == "pass" and [s.result for s in sigs if s.algorithm == RSA] == ["pass"], sigs
    if not (have_opendkim() and have_mail_dkim()):
        pytest.skip("verified by dkimpy only: install opendkim and libmail-dkim-perl for the others")
