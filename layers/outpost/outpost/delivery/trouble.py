"""The one failure policy (Postfix's smtp_trouble.c, Postal's "unknown means transient").

Every SMTP reply, DNS answer and exception the sender meets becomes a `Verdict` here and
nowhere else: delivered, transient (retry later) or permanent (bounce now), with a scope:

- HOST: this MX host is unusable right now (refused, greeting 4xx/5xx, TLS or timeout failure,
  EHLO rejected). Not a recipient failure: the caller moves on to the next MX (RFC 5321 §5.1).
- MESSAGE: the transaction as a whole (MAIL FROM or DATA rejected, DNS failure for the domain).
- RECIPIENT: one RCPT TO rejected.

Permanent verdicts also carry a kind (hard: the address is bad, suppress it; soft: the sender
or content was refused) and a Sisimai reason name, from the same classifier the bounce
processor uses, so a synchronous 550 and an asynchronous DSN say the same thing.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, replace
from enum import StrEnum

from ..bounces.limits import DIAGNOSTIC_LIMIT
from ..errors import DnsError

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Scope(StrEnum):
    HOST = "host"
    MESSAGE = "message"
    RECIPIENT = "recipient"


@dataclass(frozen=True)
class SmtpReply:
    """A reply keeps the command it answered (KumoMTA)."""

    code: int
    text: str
    command: str  # CONNECT, EHLO, STARTTLS, MAIL, RCPT, DATA, EOD (end of data)

    @property
    def enhanced(self) -> str | None:
        m = _ENHANCED.match(self.text, 0, DIAGNOSTIC_LIMIT)  # bounded like the text judged
        return ".".join(m.groups()) if m else None


class PolicyFailure(Exception):
    """A failure decided by Outpost itself (TLS required but absent, SIZE, SMTPUTF8...)."""

    def __init__(self, message: str, *, status: str, scope: Scope, command: str | None = None) -> None:
        super().__init__(message)
        self.status, self.scope, self.command = status, scope, command


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    scope: Scope
    status: str
    text: str
    code: int | None = None
    command: str | None = None
    kind: str | None = None  # hard | soft | unknown, for permanent failures
    reason: str | None = None

    @property
    def diagnostic(self) -> str:
        return f"{self.code} {self.text}" if self.code else self.text

    def as_dict(self) -> dict:
        return {k: v for k, v in {
            "outcome": self.outcome.value, "scope": self.scope.value, "status": self.status,
            "code": self.code, "text": self.text, "command": self.command, "kind": self.kind,
            "reason": self.reason}.items() if v is not None}


# Our stage names -> the classifier's (Sisimai's): "EOD" is the reply to the message content.
_CLASSIFIER_COMMAND = {"EOD": "DATA", "CONNECT": "CONN"}


def _classify(status: str, diagnostic: str, code: int | None, command: str | None) -> tuple[str, str]:
    from ..bounces.classify import classify

    # The command matters: "user unknown" text is a hard failure only as a reply to RCPT;
    # after DATA it is usually a content filter in disguise (Sisimai's rule).
    cmd = _CLASSIFIER_COMMAND.get(command or "", command)
    return classify(status, diagnostic, "failed", code, command=cmd)


def _permanent(scope: Scope, status: str, text: str, code: int | None, command: str | None) -> Verdict:
    kind, reason = _classify(status, f"{code} {text}" if code else text, code, command)
    return Verdict(Outcome.PERMANENT, scope, status, text, code, command, kind, reason)


class StageError(Exception):
    """A failure below SMTP (timeout, disconnect, TLS) at a named stage, so that the verdict
    and the attempt record say which command it interrupted."""

    def __init__(self, command: str, cause: BaseException) -> None:
        super().__init__(f"{command}: {type(cause).__name__}: {cause}")
        self.command, self.cause = command, cause


def judge(event: SmtpReply | BaseException) -> Verdict:
    """Turn a reply, a DNS answer or an exception into a verdict. Never raises."""
    if isinstance(event, SmtpReply):
        return _judge_reply(event)
    if isinstance(event, StageError):
        v = judge(event.cause)
        return replace(v, command=event.command)
    if isinstance(event, DnsError):
        if event.permanent:
            return _permanent(Scope.MESSAGE, event.status, str(event), None, "DNS")
        return Verdict(Outcome.TRANSIENT, Scope.MESSAGE, event.status, str(event), command="DNS")
    if isinstance(event, PolicyFailure):
        if event.status.startswith("5"):
            return _permanent(event.scope, event.status, str(event), None, event.command)
        return Verdict(Outcome.TRANSIENT, event.scope, event.status, str(event), command=event.command)
    # Anything on the wire below SMTP: the host is unusable now; the next MX may do better.
    if isinstance(event, ssl.SSLError | ssl.CertificateError):
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.7.5", f"TLS failure: {event}", command="STARTTLS")
    if isinstance(event, TimeoutError | asyncio.TimeoutError):
        # RFC 3463: 4.4.2 "bad connection"; the stage timeouts are in transport.Timeouts.
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.4.2", f"timeout: {event or 'no answer'}")
    if isinstance(event, ConnectionRefusedError):
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.4.1", f"connection refused: {event}", command="CONNECT")
    if isinstance(event, ConnectionError | OSError | EOFError):
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.4.2", f"connection failed: {event}")
    # Postal: an error nobody anticipated is transient (and logged by the caller), never a drop.
    return Verdict(Outcome.TRANSIENT, Scope.MESSAGE, "4.0.0", f"unexpected error: {type(event).__name__}: {event}")


def _judge_reply(r: SmtpReply) -> Verdict:
    cls = r.code // 100
    status = r.enhanced or f"{cls}.0.0"
    # Bounded: a hostile server's 30 KB reply cost 1.1 s of the event loop in the classifier.
    # What is kept and classified is the first DIAGNOSTIC_LIMIT characters (RFC 5321
    # section 4.5.3.1.5: 512 octets per reply line).
    text = r.text[:DIAGNOSTIC_LIMIT].strip()
    if r.command == "EOD" and cls == 2:
        return Verdict(Outcome.DELIVERED, Scope.RECIPIENT, status, text, r.code, r.command)
    if cls == 2 or cls == 3:
        # A positive reply is not an outcome by itself; a caller only asks about final replies.
        return Verdict(Outcome.DELIVERED, Scope.RECIPIENT, status, text, r.code, r.command)
    if cls not in (4, 5):
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.5.0", f"protocol error: {text}", r.code, r.command)
    if r.command in ("CONNECT", "EHLO", "HELO", "STARTTLS"):
        # Greeting or handshake refused: a host problem, not the recipient's. RFC 5321 §3.1:
        # a 554 greeting means "no service here"; another MX may serve (Postfix does the same).
        return Verdict(Outcome.TRANSIENT, Scope.HOST, status if cls == 4 else "4" + status[1:], text, r.code, r.command)
    if r.code == 421:
        # 421: the server is closing the channel, whatever the stage (RFC 5321 §3.8).
        return Verdict(Outcome.TRANSIENT, Scope.HOST, status, text, r.code, r.command)
    scope = Scope.RECIPIENT if r.command == "RCPT" else Scope.MESSAGE
    if cls == 4:
        # 452 / 4.5.3 (too many recipients) on RCPT is transient too (RFC 5321 §4.5.3.1.10).
        return Verdict(Outcome.TRANSIENT, scope, status, text, r.code, r.command)
    return _permanent(scope, status, text, r.code, r.command)
