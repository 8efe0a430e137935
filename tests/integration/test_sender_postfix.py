"""Postfix from Debian as a second, independent MX (root only; skipped otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postfix_rig import running_postfix
from sender_rig import PREFIX, Rig

from outpost_local.mx import (
    GreetingReply,
)
from outpost_local.postfix import PostfixInstance

pytestmark = pytest.mark.timeout(90)

# == Postfix from Debian as an independent MX ====================================================


@pytest.fixture
def postfix_mx(rig: Rig, tmp_path: Path) -> Iterator[PostfixInstance]:
    name = "mx.postfix.test"
    with running_postfix(tmp_path / "postfix", f"{PREFIX}.7", rig.smtp_port, "postfix.test", {"alice"},
                         rig.pki.cert_files(name), hostname=name) as pf:
        yield pf


def test_postfix_as_a_second_mx_accepts_and_rejects_unknown_users(rig: Rig, postfix_mx: PostfixInstance) -> None:
    # The primary MX is down for maintenance (421); Postfix, the backup, takes the mail.
    rig.mx("postfix.test", 2, GreetingReply(421, "4.3.2 maintenance"), pref=10)
    rig.dns.add("postfix.test", "MX", (20, "mx.postfix.test"))
    rig.dns.add("mx.postfix.test", "A", f"{PREFIX}.7")
    mid = rig.send("alice@postfix.test", "nobody@postfix.test")
    rig.run(mid)
    alice, nobody = rig.rcpts(mid)
    assert alice["state"] == "delivered", alice
    a = alice["attempts"][0]
    assert a["mx"] == "mx.postfix.test" and a["tls"]["verified"] is True
    assert alice["remote_id"]  # from Postfix's "250 2.0.0 Ok: queued as XXXX"
    assert nobody["state"] == "bounced"
    assert nobody["bounce"]["kind"] == "hard" and nobody["bounce"]["reason"] == "userunknown"
    assert (nobody["last"]["code"], nobody["last"]["status"], nobody["last"]["command"]) == (550, "5.1.1", "RCPT")
    [delivered] = postfix_mx.wait_delivered(1, timeout=15)
    assert f"b-{mid}-0-".encode() in delivered  # Return-Path: our VERP address
