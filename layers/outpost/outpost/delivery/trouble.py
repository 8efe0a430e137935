"""The one failure policy (Postfix's smtp_trouble.c, Postal's "unknown means transient").

Every SMTP reply, DNS answer and exception the sender meets becomes a `Verdict` here and
nowhere else: delivered, transient (retry later) or permanent (bounce now), with a scope:

- HOST: this MX host is unusable right now (refused, greeting 4xx/5xx, TLS or timeout failure,
  EHLO rejected, 421 or a lost connection in mid-transaction). Not a recipient failure: the
  caller moves on to the next MX (RFC 5321 §5.1), in mid-transaction too (`tries_next_mx`),
  except after the final dot (RFC 1047); on the last MX the recipient is deferred.
- MESSAGE: the transaction as a whole (MAIL FROM or DATA rejected, DNS failure for the domain).
- RECIPIENT: one RCPT TO rejected.
- PROVIDER: a throttle (throttles.py: Gmail 421 4.7.28, Outlook 451 4.7.650, Yahoo [TSS04],
  "rate limited", ...): the provider that runs this MX host is throttling our sending IP.
  Transient; the caller suspends the provider for this IP (suspension.py), defers this
  recipient (one attempt) and every other one bound for that provider (no attempt), and no
  container connects to it until the suspension ends. Only when the caller names the
  provider (`judge(event, provider=...)`); without one, the same reply keeps its old scope.

Permanent verdicts also carry a kind (hard: the address is bad, suppress it; soft: the sender
or content was refused) and a Sisimai reason name, from the same classifier the bounce
processor uses, so a synchronous 550 and an asynchronous DSN say the same thing.

Host-aware (issue 11 review): a provider's own wording applies only to a reply from that
provider's MX host, which the caller names (`judge(event, provider, host=mx_host)`): the
throttle table's provider rows by `provider` (throttles.py), the classifier's provider texts
(Google, Microsoft, Mimecast, Tencent: bounces/_vendor.py) by providers.provider_for(host),
and the texts keyed by host in the DSN parser (GoDaddy, KDDI, NTT DOCOMO: "550 : User unknown"
from KDDI is the recipient's filter, not an unknown user) by the host itself. Generic
patterns, and codes that name their provider (GoDaddy's IBnnn, Cox's AUP#), apply to any
host. Without a host, a reply is read as a DSN's (the marks in its text decide).

The exceptions judged here carry facts (errors.py: the command, the code, the text, what was
lacking); the statuses and scopes are decided below and nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, replace
from enum import StrEnum

from aiosmtplib import SMTPStatus

from ..bounces.limits import DIAGNOSTIC_LIMIT
from ..errors import (
    DnsError,
    NoSigningKeyError,
    NoSuchDomainError,
    NullMxError,
    RefusedAddressError,
    ReplyError,
    RequirementError,
    ShapingWaitError,
    StageError,
    StsLookupTimeoutError,
    StsMxMismatchError,
    enhanced_status,
)
from .providers import provider_for
from .throttles import throttle_for


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Scope(StrEnum):
    HOST = "host"
    MESSAGE = "message"
    RECIPIENT = "recipient"
    PROVIDER = "provider"  # a throttle: the provider is suspended for our IP (throttles.py)


@dataclass(frozen=True)
class SmtpReply:
    """A reply keeps the command it answered (KumoMTA)."""

    code: int
    text: str
    command: str  # CONNECT, EHLO, STARTTLS, MAIL, RCPT, DATA, EOD (end of data)

    @property
    def enhanced(self) -> str | None:
        return enhanced_status(self.text)


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
    # The final dot was sent and no reply came: the server may have the message (RFC 1047).
    after_dot: bool = False
    # A throttle (Scope.PROVIDER): the provider and its backoff class (throttles.py).
    provider: str | None = None
    backoff: str | None = None

    @property
    def diagnostic(self) -> str:
        return f"{self.code} {self.text}" if self.code else self.text

    def as_dict(self) -> dict:
        return {k: v for k, v in {
            "outcome": self.outcome.value, "scope": self.scope.value, "status": self.status,
            "code": self.code, "text": self.text, "command": self.command, "kind": self.kind,
            "reason": self.reason, "provider": self.provider}.items() if v is not None}


# Our stage names -> the classifier's (Sisimai's): "EOD" is the reply to the message content.
_CLASSIFIER_COMMAND = {"EOD": "DATA", "CONNECT": "CONN"}


def _classify(status: str, diagnostic: str, code: int | None, command: str | None,
              host: str | None = None) -> tuple[str, str]:
    from ..bounces._vendor import host_reason
    from ..bounces.classify import classify, kind_for_reason

    # The command matters: "user unknown" text is a hard failure only as a reply to RCPT;
    # after DATA it is usually a content filter in disguise (Sisimai's rule).
    cmd = _CLASSIFIER_COMMAND.get(command or "", command)
    provider = provider_for(host) if host else None
    kind, reason = classify(status, diagnostic, "failed", code, command=cmd, provider=provider)
    # A reply from a host whose own texts are documented (dsn.py's Rhost step, live).
    found = host_reason(host, status, diagnostic, cmd) if host else None
    return (kind_for_reason(found, status, code), found) if found else (kind, reason)


def _permanent(scope: Scope, status: str, text: str, code: int | None, command: str | None,
               host: str | None = None) -> Verdict:
    kind, reason = _classify(status, f"{code} {text}" if code else text, code, command, host)
    return Verdict(Outcome.PERMANENT, scope, status, text, code, command, kind, reason)


# What Outpost refuses itself (errors.RequirementError.lacks) -> (status, scope, RFC).
_REQUIREMENTS: dict[str, tuple[str, Scope]] = {
    "size": ("5.3.4", Scope.MESSAGE),  # RFC 1870 §6: larger than the server's SIZE
    "smtputf8": ("5.6.7", Scope.RECIPIENT),  # RFC 6531 §3.2: no downgrade of the address
    "8bitmime": ("5.6.3", Scope.MESSAGE),  # RFC 6152: 8-bit content needs 8BITMIME
    "starttls": ("4.7.10", Scope.HOST),  # RFC 3207 §4: TLS required and not offered
    "tls": ("4.7.5", Scope.HOST),  # STARTTLS refused or the handshake failed, TLS required
    "certificate": ("4.7.5", Scope.HOST),  # RFC 8461 §4.2 / "verified": no valid certificate
}

_DNS: tuple[tuple[type[DnsError], str], ...] = (
    (NoSuchDomainError, "5.1.2"),  # NXDOMAIN, or no MX and no address (RFC 5321 §5.1)
    (NullMxError, "5.1.10"),  # RFC 7505 §4.1
    (RefusedAddressError, "5.4.4"),  # only non-public addresses: unable to route
)


def judge(event: SmtpReply | BaseException, provider: str | None = None, *, host: str | None = None) -> Verdict:
    """Turn a reply, a DNS answer or an exception into a verdict. Never raises. `provider`:
    who runs the MX host that answered (providers.provider_for), so a throttle reply becomes
    a PROVIDER verdict (throttles.py); None when shaping is off. `host`: the MX host that
    answered, so a permanent reply is read with its provider's texts and no other's."""
    if isinstance(event, SmtpReply):
        return _judge_reply(event, provider, host)
    if isinstance(event, ReplyError):
        return _judge_reply(SmtpReply(event.code, event.text, event.command), provider, host)
    if isinstance(event, StageError):
        v = replace(judge(event.cause, provider, host=host), command=event.command)
        if event.after_dot:
            # The content was sent and no reply came; the server may have kept it (RFC 1047),
            # so a retry may deliver a second copy. Never retried on another MX at once.
            v = replace(v, after_dot=True, text=(
                "no reply to the end of data; the server may have accepted the message, "
                f"so the retry may deliver a second copy (RFC 1047): {v.text}"))
        return v
    if isinstance(event, DnsError):
        for cls, status in _DNS:
            if isinstance(event, cls):
                return _permanent(Scope.MESSAGE, status, str(event), None, "DNS")
        # RFC 3463 4.4.3: directory server failure; Postfix defers too.
        return Verdict(Outcome.TRANSIENT, Scope.MESSAGE, "4.4.3", str(event), command="DNS")
    if isinstance(event, RequirementError):
        status, scope = _REQUIREMENTS.get(event.lacks, ("4.0.0", Scope.MESSAGE))
        if status.startswith("5"):
            return _permanent(scope, status, str(event), None, event.command)
        return Verdict(Outcome.TRANSIENT, scope, status, str(event), command=event.command)
    if isinstance(event, NoSigningKeyError):
        # An operator's omission, not the recipient's: retried until the key exists or expiry.
        return Verdict(Outcome.TRANSIENT, Scope.MESSAGE, "4.7.0", str(event))
    if isinstance(event, StsLookupTimeoutError):
        # RFC 3463 4.4.3: a directory (DNS/HTTPS) lookup did not complete. Not "no policy":
        # an attacker who stalls the lookup must not switch a cached policy off.
        return Verdict(Outcome.TRANSIENT, Scope.RECIPIENT, "4.4.3", str(event), command="MTA-STS")
    if isinstance(event, ShapingWaitError):
        # Our own shaping (issue 11), not the receiver's: RFC 3463 4.4.5 "system congestion",
        # for this recipient only; it waits without an attempt counted (shaping.py).
        return Verdict(Outcome.TRANSIENT, Scope.RECIPIENT, "4.4.5", str(event), command="SHAPING")
    if isinstance(event, StsMxMismatchError):
        # RFC 8461 §4.1: enforce delivers only to the policy's MX hosts; defer, never bounce.
        return Verdict(Outcome.TRANSIENT, Scope.RECIPIENT, "4.7.5", str(event), command="MTA-STS")
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


def tries_next_mx(v: Verdict) -> bool:
    """Whether a failure in mid-session leaves the recipient for the next MX host rather than
    deferring it (the caller asks only when that host is not the last one).

    Postfix smtp_trouble.c: a soft error of the site (421 after MAIL/RCPT/DATA, a dropped
    connection, a timeout) on a server that is not the final one does not defer the recipient;
    the next server is tried in the same delivery. Never after the final dot: the server may
    have the message (RFC 1047), so that recipient is deferred, not sent twice at once.
    """
    return v.outcome is Outcome.TRANSIENT and v.scope is Scope.HOST and not v.after_dot


def unreached(v: Verdict, note: str | None = None) -> Verdict:
    """The recipient's verdict when no MX host took the transaction (every one failed at
    host level, or the attempt's session limit was reached): the last host's failure,
    transient, for the recipient (RFC 5321 §5.1: defer and retry the whole list later)."""
    text = f"{v.text} ({note})" if note else v.text
    return Verdict(Outcome.TRANSIENT, Scope.RECIPIENT, v.status, text, v.code, v.command)


def _judge_reply(r: SmtpReply, provider: str | None = None, host: str | None = None) -> Verdict:
    cls = r.code // 100
    status = r.enhanced or f"{cls}.0.0"
    # Bounded: a hostile server's 30 KB reply cost 1.1 s of the event loop in the classifier.
    # What is kept and classified is the first DIAGNOSTIC_LIMIT characters (RFC 5321
    # section 4.5.3.1.5: 512 octets per reply line).
    text = r.text[:DIAGNOSTIC_LIMIT].strip()
    if cls in (2, 3):
        # Only the reply to the final dot delivers (the caller asks about nothing else).
        # A positive reply is not an outcome by itself; a caller only asks about final replies.
        return Verdict(Outcome.DELIVERED, Scope.RECIPIENT, status, text, r.code, r.command)
    if cls not in (4, 5):
        return Verdict(Outcome.TRANSIENT, Scope.HOST, "4.5.0", f"protocol error: {text}", r.code, r.command)
    throttle = throttle_for(provider, r.code, r.enhanced, text, r.command) if provider else None
    if throttle is not None:
        # Before the stage rules: a throttle at the greeting, at RCPT or after the dot is the
        # provider's verdict on our IP, not this host's or this recipient's (issue 11 item 4).
        return Verdict(Outcome.TRANSIENT, Scope.PROVIDER, status, text, r.code, r.command,
                       provider=provider, backoff=throttle.backoff)
    if r.command in ("CONNECT", "EHLO", "HELO", "STARTTLS"):
        # Greeting or handshake refused: a host problem, not the recipient's. RFC 5321 §3.1:
        # a 554 greeting means "no service here"; another MX may serve (Postfix does the same).
        return Verdict(Outcome.TRANSIENT, Scope.HOST, status if cls == 4 else "4" + status[1:], text, r.code, r.command)
    if r.code == SMTPStatus.domain_unavailable:
        # 421: the server is closing the channel, whatever the stage (RFC 5321 §3.8).
        return Verdict(Outcome.TRANSIENT, Scope.HOST, status, text, r.code, r.command)
    scope = Scope.RECIPIENT if r.command == "RCPT" else Scope.MESSAGE
    if cls == 4:
        # 452 / 4.5.3 (too many recipients) on RCPT is transient too (RFC 5321 §4.5.3.1.10).
        return Verdict(Outcome.TRANSIENT, scope, status, text, r.code, r.command)
    return _permanent(scope, status, text, r.code, r.command, host)
