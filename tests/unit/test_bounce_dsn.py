"""RFC 3464 parsing edge cases and the classification rules, on hand-made messages that
isolate one deviation each (the golden tests cover whole real bounces)."""

from __future__ import annotations

from outpost.bounces import classify, parse_bounce, status_from_text


def _dsn(ds_type: str, ds_body: str, *, top: str = "multipart/report; "
         "report-type=delivery-status", orig: str = "") -> bytes:
    orig_part = (
        f"--B\nContent-Type: message/rfc822\n\n{orig}\n" if orig else ""
    )
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: bounce+tok123@bounces.example.org\n"
        f"Subject: Undelivered Mail\nMIME-Version: 1.0\nContent-Type: {top}; boundary=\"B\"\n\n"
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        f"--B\nContent-Type: {ds_type}\n\n{ds_body}\n{orig_part}--B--\n"
    ).encode()


BLOCKS = (
    "Reporting-MTA: dns; mx.example.net\nOriginal-Envelope-Id: env-42\n"
    "Arrival-Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n"
    "Original-Recipient: rfc822;Nobody@Example.COM\nFinal-Recipient: rfc822; nobody@EXAMPLE.com\n"
    "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.com\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>: Recipient address\n"
    "    rejected: User unknown in local recipient table\n"
    "Last-Attempt-Date: Mon, 1 Jan 2024 00:00:01 +0000\n\n"
    "Final-Recipient: rfc822; full@example.org\nAction: delayed\nStatus: 4.2.2\n"
    "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\n\n"
    "Final-Recipient: rfc822; fine@example.org\nAction: delivered\nStatus: 2.0.0\n"
)


def test_rfc3464_fields() -> None:
    rep = parse_bounce(_dsn("message/delivery-status", BLOCKS,
                            orig="Message-ID: <orig-1@example.org>\nSubject: hi\n\nbody"))
    assert rep.kind == "dsn" and rep.family == "rfc3464"
    assert rep.envelope_id == "env-42" and rep.reporting_mta == "mx.example.net"
    assert rep.original_message_id == "orig-1@example.org"
    assert rep.to_addresses == ("bounce+tok123@bounces.example.org",)
    by = {r.address: r for r in rep.recipients}
    # Delivered entries are success reports, not bounces.
    assert set(by) == {"nobody@example.com", "full@example.org"}
    hard = by["nobody@example.com"]
    assert (hard.action, hard.status, hard.kind, hard.reason) == ("failed", "5.1.1", "hard",
                                                                   "userunknown")
    assert hard.reply_code == 550 and hard.remote_mta == "mx.example.com"
    assert hard.diagnostic and "User unknown in local recipient table" in hard.diagnostic
    assert hard.original_recipient == "Nobody@example.com"
    # Action: delayed is a deferral: kept, marked delayed, soft.
    d = by["full@example.org"]
    assert (d.action, d.kind, d.reason) == ("delayed", "soft", "mailboxfull")


def test_global_delivery_status_rfc6533() -> None:
    body = ("Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: utf-8; "
            "\u7528\u6237@example.cn\nAction: failed\nStatus: 5.1.1\n")
    rep = parse_bounce(_dsn("message/global-delivery-status", body))
    assert [(r.address, r.status, r.kind) for r in rep.recipients] == [
        ("\u7528\u6237@example.cn", "5.1.1", "hard")]


def test_missing_blank_lines_and_several_recipients_per_block() -> None:
    body = ("Reporting-MTA: dns; mx.example.net\n"
            "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
            "Final-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.2.2\n")
    rep = parse_bounce(_dsn("message/delivery-status", body))
    assert [(r.address, r.reason) for r in rep.recipients] == [
        ("a@example.com", "userunknown"), ("b@example.com", "mailboxfull")]


def test_wrong_content_type_still_parsed() -> None:
    body = "Final-Recipient: rfc822; c@example.com\nAction: failed\nStatus: 5.1.2\n"
    rep = parse_bounce(_dsn("text/plain", body, top="multipart/mixed"))
    assert [(r.address, r.reason, r.kind) for r in rep.recipients] == [
        ("c@example.com", "hostunknown", "hard")]


def test_generic_status_refined_from_diagnostic() -> None:
    body = ("Final-Recipient: rfc822; d@example.com\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does"
            " not exist\n")
    r = parse_bounce(_dsn("message/delivery-status", body)).recipients[0]
    assert (r.status, r.kind, r.reason) == ("5.1.1", "hard", "userunknown")


def test_not_a_bounce() -> None:
    rep = parse_bounce(b"From: a@example.com\nTo: b@example.org\nSubject: lunch?\n\nHi!\n")
    assert rep.kind == "none" and rep.recipients == ()
    assert parse_bounce(b"").kind == "none"


def test_autoreply_never_suppresses() -> None:
    raw = (b"From: Kiji <kiji@example.net>\nTo: news@example.org\nSubject: Out of office: hi\n"
           b"Auto-Submitted: auto-replied\n\nI am out of the office until Monday.\n")
    rep = parse_bounce(raw)
    assert rep.kind == "autoreply"
    assert all(r.kind == "unknown" and r.reason == "vacation" for r in rep.recipients)


def test_classify_smtp_replies_for_the_sender() -> None:
    assert classify("5.1.1", "550 5.1.1 user unknown") == ("hard", "userunknown")
    assert classify("5.7.1", "550 5.7.1 blocked") == ("soft", "blocked")
    assert classify("4.2.2", "452 4.2.2 mailbox full") == ("soft", "mailboxfull")
    assert classify(None, "550 5.1.2 Host unknown") == ("hard", "hostunknown")
    assert classify(None, "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked "
                          "using zen.spamhaus.org") == ("soft", "blocked")
    assert classify("5.0.0", "550 Requested action not taken: mailbox unavailable",
                    command="RCPT") == ("hard", "userunknown")
    assert classify("5.1.10", "556 5.1.10 null MX") == ("hard", "notaccept")
    assert classify("4.4.1", "connection timed out", action="delayed") == ("soft", "expired")


def test_status_from_text() -> None:
    assert status_from_text("550-5.7.26 Unauthenticated email") == "5.7.26"
    assert status_from_text("smtp; 550 #5.1.0 Address rejected") == "5.1.0"
    assert status_from_text("host 192.0.2.1 said: 550 no such user") is None
    assert status_from_text("version 5.1.1.2 released") is None
