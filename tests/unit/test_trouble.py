"""The one failure policy: every reply, DNS answer and exception becomes a verdict (issue 3)."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from outpost.delivery.trouble import (
    Outcome,
    PolicyFailure,
    Scope,
    SmtpReply,
    StageError,
    judge,
)
from outpost.errors import DnsError


def test_550_5_1_1_at_rcpt_is_a_hard_userunknown() -> None:
    v = judge(SmtpReply(550, "5.1.1 <zed@example.com>: Recipient address rejected: User unknown", "RCPT"))
    assert (v.outcome, v.scope, v.status, v.kind, v.reason) == (
        Outcome.PERMANENT, Scope.RECIPIENT, "5.1.1", "hard", "userunknown")
    assert v.command == "RCPT" and v.code == 550


def test_550_5_7_1_blocked_is_a_soft_bounce() -> None:
    v = judge(SmtpReply(550, "5.7.1 Service unavailable; client host [192.0.2.1] blocked", "RCPT"))
    assert (v.outcome, v.kind, v.reason) == (Outcome.PERMANENT, "soft", "blocked")


def test_user_unknown_text_is_hard_only_at_rcpt() -> None:
    # A generic 5.0.0 with "no such user" text: hard at RCPT, not after the content (Sisimai).
    at_rcpt = judge(SmtpReply(550, "5.0.0 No such user here", "RCPT"))
    after_data = judge(SmtpReply(550, "5.0.0 No such user here", "EOD"))
    assert at_rcpt.kind == "hard" and at_rcpt.reason == "userunknown"
    assert after_data.kind == "soft" and after_data.reason != "userunknown"
    assert after_data.scope is Scope.MESSAGE


def test_452_4_2_2_is_transient() -> None:
    v = judge(SmtpReply(452, "4.2.2 Mailbox full", "RCPT"))
    assert (v.outcome, v.scope, v.status) == (Outcome.TRANSIENT, Scope.RECIPIENT, "4.2.2")


def test_452_4_5_3_too_many_recipients_is_transient() -> None:
    assert judge(SmtpReply(452, "4.5.3 Too many recipients", "RCPT")).outcome is Outcome.TRANSIENT


def test_greeting_failures_are_host_level() -> None:
    for code, text in [(421, "4.3.2 Service shutting down"), (554, "5.3.2 No SMTP service here")]:
        v = judge(SmtpReply(code, text, "CONNECT"))
        assert (v.outcome, v.scope) == (Outcome.TRANSIENT, Scope.HOST)
        assert v.status.startswith("4.")


def test_421_at_any_stage_is_host_level() -> None:
    v = judge(SmtpReply(421, "4.4.2 Timeout, closing", "MAIL"))
    assert (v.outcome, v.scope) == (Outcome.TRANSIENT, Scope.HOST)


def test_250_at_end_of_data_is_delivered() -> None:
    v = judge(SmtpReply(250, "2.0.0 Ok: queued as ABC123", "EOD"))
    assert v.outcome is Outcome.DELIVERED and v.status == "2.0.0"


def test_no_enhanced_code_falls_back_to_the_class() -> None:
    v = judge(SmtpReply(554, "Transaction failed", "EOD"))
    assert (v.outcome, v.status, v.scope) == (Outcome.PERMANENT, "5.0.0", Scope.MESSAGE)


def test_dns_answers() -> None:
    null = judge(DnsError("null MX", permanent=True, status="5.1.10"))
    assert (null.outcome, null.status, null.command) == (Outcome.PERMANENT, "5.1.10", "DNS")
    nx = judge(DnsError("NXDOMAIN", permanent=True, status="5.1.2"))
    assert nx.kind == "hard" and nx.reason == "hostunknown"
    sf = judge(DnsError("SERVFAIL", permanent=False, status="4.4.3"))
    assert (sf.outcome, sf.status) == (Outcome.TRANSIENT, "4.4.3")


def test_policy_failures() -> None:
    size = judge(PolicyFailure("too big", status="5.3.4", scope=Scope.MESSAGE, command="MAIL"))
    assert (size.outcome, size.reason, size.kind) == (Outcome.PERMANENT, "mesgtoobig", "soft")
    tls = judge(PolicyFailure("no STARTTLS", status="4.7.10", scope=Scope.HOST, command="STARTTLS"))
    assert (tls.outcome, tls.scope) == (Outcome.TRANSIENT, Scope.HOST)


@pytest.mark.parametrize("exc", [
    TimeoutError(), TimeoutError(), aiosmtplib.SMTPReadTimeoutError("read"),
    ConnectionRefusedError(), ConnectionResetError(), aiosmtplib.SMTPServerDisconnected("gone"),
    ssl.SSLError("handshake"), EOFError(),
])
def test_wire_failures_are_transient_host_level(exc: BaseException) -> None:
    v = judge(exc)
    assert (v.outcome, v.scope) == (Outcome.TRANSIENT, Scope.HOST)


def test_stage_error_keeps_the_command() -> None:
    v = judge(StageError("RCPT", aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")))
    assert (v.outcome, v.scope, v.command, v.status) == (Outcome.TRANSIENT, Scope.HOST, "RCPT", "4.4.2")


def test_an_unexpected_exception_is_transient_never_a_drop() -> None:
    v = judge(KeyError("surprise"))
    assert (v.outcome, v.scope, v.status) == (Outcome.TRANSIENT, Scope.MESSAGE, "4.0.0")
    assert "KeyError" in v.text
