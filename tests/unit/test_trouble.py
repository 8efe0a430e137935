"""The one failure policy: every reply, DNS answer and exception becomes a verdict (issue 3)."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from outpost.delivery.trouble import (
    Outcome,
    Scope,
    SmtpReply,
    judge,
    tries_next_mx,
    unreached,
)
from outpost.errors import (
    DnsLookupError,
    NoSigningKeyError,
    NoSuchDomainError,
    NullMxError,
    RefusedAddressError,
    ReplyError,
    RequirementError,
    StageError,
    StsLookupTimeoutError,
    StsMxMismatchError,
)


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
    null = judge(NullMxError("null MX"))
    assert (null.outcome, null.status, null.command) == (Outcome.PERMANENT, "5.1.10", "DNS")
    nx = judge(NoSuchDomainError("NXDOMAIN"))
    assert (nx.status, nx.kind, nx.reason) == ("5.1.2", "hard", "hostunknown")
    refused = judge(RefusedAddressError("mx.evil.test", ["10.0.0.1"]))
    assert (refused.outcome, refused.status) == (Outcome.PERMANENT, "5.4.4")
    sf = judge(DnsLookupError("SERVFAIL"))
    assert (sf.outcome, sf.status) == (Outcome.TRANSIENT, "4.4.3")


def test_what_outpost_refuses_itself() -> None:
    size = judge(RequirementError("too big", lacks="size", command="MAIL", limit=1000))
    assert (size.outcome, size.status, size.reason, size.kind) == (Outcome.PERMANENT, "5.3.4", "mesgtoobig", "soft")
    utf8 = judge(RequirementError("needs SMTPUTF8", lacks="smtputf8", command="MAIL"))
    assert (utf8.outcome, utf8.scope, utf8.status) == (Outcome.PERMANENT, Scope.RECIPIENT, "5.6.7")
    eight = judge(RequirementError("8-bit", lacks="8bitmime", command="MAIL"))
    assert (eight.outcome, eight.scope, eight.status) == (Outcome.PERMANENT, Scope.MESSAGE, "5.6.3")
    tls = judge(RequirementError("no STARTTLS", lacks="starttls", command="STARTTLS"))
    assert (tls.outcome, tls.scope, tls.status) == (Outcome.TRANSIENT, Scope.HOST, "4.7.10")
    for lacks in ("tls", "certificate"):
        v = judge(RequirementError("handshake", lacks=lacks, command="STARTTLS"))
        assert (v.outcome, v.scope, v.status, v.command) == (Outcome.TRANSIENT, Scope.HOST, "4.7.5", "STARTTLS")


def test_no_signing_key_and_mta_sts_trouble_are_transient() -> None:
    key = judge(NoSigningKeyError("sender.test"))
    assert (key.outcome, key.scope, key.status) == (Outcome.TRANSIENT, Scope.MESSAGE, "4.7.0")
    assert "sender.test" in key.text
    slow = judge(StsLookupTimeoutError("lookup took too long", "sts.test"))
    assert (slow.outcome, slow.scope, slow.status, slow.command) == (
        Outcome.TRANSIENT, Scope.RECIPIENT, "4.4.3", "MTA-STS")
    mismatch = judge(StsMxMismatchError("sts.test", ["mx.other.test"], ["mx.sts.test"]))
    assert (mismatch.outcome, mismatch.status, mismatch.command) == (Outcome.TRANSIENT, "4.7.5", "MTA-STS")
    assert "mx.other.test" in mismatch.text


def test_a_reply_error_is_judged_like_its_reply() -> None:
    exc = ReplyError(550, "5.1.1 <zed@example.com>: User unknown", "RCPT")
    assert exc.enhanced == "5.1.1"
    assert judge(exc) == judge(SmtpReply(550, "5.1.1 <zed@example.com>: User unknown", "RCPT"))


@pytest.mark.parametrize(("event", "moves"), [
    # Postfix smtp_trouble.c: a soft failure of the site in mid-transaction -> next MX.
    (ReplyError(421, "4.3.2 Too busy", "RCPT"), True),
    (ReplyError(421, "4.3.2 Too busy", "MAIL"), True),
    (StageError("MAIL", aiosmtplib.SMTPServerDisconnected("gone")), True),
    (StageError("RCPT", aiosmtplib.SMTPReadTimeoutError("read")), True),
    (StageError("EOD", ConnectionResetError()), True),  # dropped while the content was sent
    # Never after the final dot (RFC 1047): the server may have the message.
    (StageError("EOD", aiosmtplib.SMTPReadTimeoutError("read"), after_dot=True), False),
    # The recipient's or the message's own trouble stays with it.
    (ReplyError(450, "4.2.1 Mailbox busy", "RCPT"), False),
    (ReplyError(451, "4.3.0 Try later", "EOD"), False),
    (ReplyError(550, "5.1.1 User unknown", "RCPT"), False),
    (KeyError("a bug"), False),
])
def test_which_failures_move_to_the_next_mx(event: BaseException, moves: bool) -> None:
    assert tries_next_mx(judge(event)) is moves


def test_an_unanswered_final_dot_says_so() -> None:
    v = judge(StageError("EOD", aiosmtplib.SMTPReadTimeoutError("read"), after_dot=True))
    assert (v.outcome, v.scope, v.command, v.after_dot) == (Outcome.TRANSIENT, Scope.HOST, "EOD", True)
    assert "RFC 1047" in v.text


def test_unreached_recipients_defer_with_the_last_hosts_reply() -> None:
    v = unreached(judge(SmtpReply(421, "4.3.2 Busy", "CONNECT")), "session limit of 2 per attempt reached")
    assert (v.outcome, v.scope, v.status, v.code, v.command) == (
        Outcome.TRANSIENT, Scope.RECIPIENT, "4.3.2", 421, "CONNECT")
    assert v.text == "4.3.2 Busy (session limit of 2 per attempt reached)"


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
