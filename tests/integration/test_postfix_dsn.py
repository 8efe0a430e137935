"""Real Postfix DSNs, produced on loopback and parsed live by the bounce parser.

Three ways a message really bounces through Postfix (a private instance, see
outpost_local.postfix; the DSNs are captured as files through a catch-all "capture domain"):

* a relay whose next hop refuses the recipient at RCPT with 550 5.1.1 (a scripted MxServer);
* a relay whose next hop is down (nothing listens) until the message expires
  (maximal_queue_lifetime = bounce_queue_lifetime = 0: one attempt, then a bounce);
* an MX that accepts the message (250 at end of DATA) and bounces it later, because the
  virtual mailbox it delivers into is over virtual_mailbox_limit ("File too large", 5.2.2).

Each live DSN must parse exactly as the committed golden sample of the same scenario
(tests/golden/bounces/postfix-generated/<name>.eml + .json): the committed .eml files were
produced by this test (OUTPOST_WRITE_GOLDEN=1 rewrites them), so the golden test suite keeps
checking real Postfix output even where Postfix cannot run.  Needs root and Debian's postfix.
"""

from __future__ import annotations

import json
import os
import pwd
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outpost.bounces import parse_bounce
from outpost_local.lifecycle import free_port
from outpost_local.mx import MxServer, RejectUnknown
from outpost_local.postfix import PostfixInstance, postfix_available

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.timeout(90),
    pytest.mark.skipif(postfix_available() is not None, reason=postfix_available() or ""),
]

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "bounces" / "postfix-generated"
FIELDS = ("address", "status", "action", "kind", "reason", "reply_code")
RETURN_PATH = "b+Tok3n@bounces.test"


def _message(to: str, msgid: str, lines: int = 3) -> bytes:
    body = "".join(f"line {i:04d} " + "x" * 50 + "\r\n" for i in range(lines))
    return (
        f"From: App <app@bounces.test>\r\nTo: {to}\r\nSubject: Outpost DSN test\r\n"
        f"Message-ID: <{msgid}@bounces.test>\r\n\r\n{body}"
    ).encode()


def _send(host: str, port: int, rcpt: str, msgid: str, envid: str, lines: int = 3) -> None:
    with smtplib.SMTP(host, port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        smtp.sendmail(RETURN_PATH, [rcpt], _message(rcpt, msgid, lines),
                      mail_options=[f"ENVID={envid}"], rcpt_options=["NOTIFY=FAILURE"])


def _configure(pf: PostfixInstance, **settings: str) -> None:
    """Change main.cf settings of a running instance (postconf -e, then postfix reload)."""
    cfg = str(pf.config_dir)
    subprocess.run(["/usr/sbin/postconf", "-c", cfg, "-e",
                    *(f"{k}={v}" for k, v in settings.items())], check=True, timeout=30)
    subprocess.run(["/usr/sbin/postfix", "-c", cfg, "reload"], check=True, timeout=30,
                   capture_output=True)


def _view(raw: bytes) -> dict[str, Any]:
    rep = parse_bounce(raw)
    return {
        "kind": rep.kind,
        "family": rep.family,
        "recipients": [{f: getattr(r, f) for f in FIELDS} for r in rep.recipients],
    }


def _check_against_golden(name: str, dsn: bytes) -> dict[str, Any]:
    """The live DSN parses as the committed sample does (or rewrite the sample on demand)."""
    view = _view(dsn)
    eml, js = GOLDEN / f"{name}.eml", GOLDEN / f"{name}.json"
    if os.environ.get("OUTPOST_WRITE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        eml.write_bytes(dsn)
        js.write_text(json.dumps(view, indent=2) + "\n")
    assert view == json.loads(js.read_text())
    assert _view(eml.read_bytes()) == view
    return view


def test_relay_turns_a_rcpt_550_into_a_dsn(
    tmp_path: Path, mx_factory: Callable[..., MxServer]
) -> None:
    next_hop = mx_factory("127.0.0.61", 0, RejectUnknown({"bob"}), None)
    host = "127.0.0.62"
    port = free_port(host)
    with PostfixInstance(
        tmp_path / "relay", host, port, "relay.test", set(), None, hostname="relay.test",
        relay_to=(next_hop.host, next_hop.port), capture_domains={"bounces.test"},
    ) as relay:
        _send(host, port, "mallory@a.test", "dsn-550", "EnV-550")
        [dsn] = relay.wait_delivered(1, mailbox="bounces.test", timeout=40)

    assert next_hop.replies("RCPT") == [
        "550 5.1.1 <mallory@a.test>: Recipient address rejected: User unknown"]
    view = _check_against_golden("relay-rcpt-550", dsn)
    assert view["recipients"] == [{
        "address": "mallory@a.test", "status": "5.1.1", "action": "failed", "kind": "hard",
        "reason": "userunknown", "reply_code": 550}]
    rep = parse_bounce(dsn)
    assert rep.kind == "dsn" and rep.family == "rfc3464"
    assert rep.envelope_id == "EnV-550" and rep.reporting_mta == "relay.test"
    assert rep.original_message_id == "dsn-550@bounces.test"
    assert rep.to_addresses[0].lower() == RETURN_PATH.lower()
    [r] = rep.recipients
    assert r.remote_mta == "127.0.0.61"
    assert r.diagnostic and "Recipient address rejected" in r.diagnostic


def test_relay_bounces_when_the_next_hop_stays_down_until_expiry(tmp_path: Path) -> None:
    # Nothing listens on the next hop: connection refused, deferred, then returned as soon
    # as the (zero) queue lifetime is over.
    down_host = "127.0.0.63"
    down_port = free_port(down_host)
    host = "127.0.0.64"
    port = free_port(host)
    with PostfixInstance(
        tmp_path / "relay", host, port, "relay.test", set(), None, hostname="relay.test",
        relay_to=(down_host, down_port), capture_domains={"bounces.test"},
    ) as relay:
        _configure(relay, maximal_queue_lifetime="0", bounce_queue_lifetime="0")
        _send(host, port, "carol@b.test", "dsn-expired", "EnV-EXP")
        [dsn] = relay.wait_delivered(1, mailbox="bounces.test", timeout=60)

    view = _check_against_golden("relay-next-hop-down", dsn)
    [r] = view["recipients"]
    assert r["address"] == "carol@b.test" and r["action"] == "failed"
    assert r["status"] == "4.4.1"  # "Connection refused" is a temporary failure (RFC 3463)
    assert (r["kind"], r["reason"]) == ("soft", "expired")  # the address may well be good
    rep = parse_bounce(dsn)
    assert rep.envelope_id == "EnV-EXP"
    assert rep.recipients[0].diagnostic and "Connection refused" in rep.recipients[0].diagnostic


def test_mx_accepts_then_bounces_when_the_mailbox_is_over_its_limit(tmp_path: Path) -> None:
    host = "127.0.0.65"
    port = free_port(host)
    with PostfixInstance(
        tmp_path / "mx", host, port, "example.test", {"alice"}, None,
        hostname="mx.example.test", capture_domains={"bounces.test"},
    ) as mx:
        # alice gets an mbox file (no trailing "/") capped at 6000 bytes: the first message
        # fits, the second makes the mailbox too large, and virtual(8) bounces it (5.2.2).
        assert mx.root is not None
        (mx.config_dir / "vmailbox").write_text(
            "alice@example.test example.test/alice\n@bounces.test bounces.test/catchall/\n")
        mailboxes = mx.root / "mail" / "example.test"
        mailboxes.mkdir(exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(mailboxes, pw.pw_uid, pw.pw_gid)
        _configure(mx, virtual_mailbox_limit="6000", message_size_limit="6000")
        _send(host, port, "alice@example.test", "dsn-full-1", "EnV-F1", lines=50)
        _send(host, port, "alice@example.test", "dsn-full-2", "EnV-F2", lines=50)
        [dsn] = mx.wait_delivered(1, mailbox="bounces.test", timeout=40)

    view = _check_against_golden("mx-mailbox-full", dsn)
    assert view["recipients"] == [{
        "address": "alice@example.test", "status": "5.2.2", "action": "failed",
        "kind": "soft", "reason": "mailboxfull", "reply_code": None}]
    rep = parse_bounce(dsn)
    assert rep.envelope_id == "EnV-F2" and rep.reporting_mta == "mx.example.test"
    assert rep.original_message_id == "dsn-full-2@bounces.test"
