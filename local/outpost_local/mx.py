"""Scriptable MX hosts: real SMTP servers (aiosmtpd) on loopback whose replies tests can script.

An `MxServer` speaks ESMTP with STARTTLS (when given a TLS context), PIPELINING, 8BITMIME,
ENHANCEDSTATUSCODES, SMTPUTF8, DSN (RFC 3461) and SIZE (when given a limit). What it answers is
decided by a list of `Behaviour` objects, asked in order; the first that has an opinion wins,
and a server with no opinions accepts everything. Behaviours use aiosmtpd-style hooks
(`handle_MAIL`, `handle_RCPT`, `handle_DATA`) returning a reply string or None, plus
`before_reply` / `after_reply` around every reply (for delays and disconnects), `greeting`,
and `on_accepted` (after a 250 to end-of-data actually went out), and `on_disconnect`.

Provider emulators (issue 11) throttle the way mailbox providers do, per client IP (the peer
address): `RateLimit` (Gmail's 421 4.7.28, Outlook's 451 4.7.650, Yahoo's 421 4.7.0 [TSS04]:
see `GMAIL_RATE`, `OUTLOOK_RATE`, `YAHOO_TSS04`), `SessionCap` (messages per connection) and
`ConnectionCap` (concurrent connections, 421 at the greeting). Each keeps counters a test or
bench reads (`counters()`), and takes its time from an injectable clock.

`AcceptThenBounce` also plays the other half of a bounce: it builds an RFC 3464 DSN
(`build_dsn`) and delivers it to the return path's MX (`send_dsn_via_smtp`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import email
import email.policy
import functools
import logging
import re
import secrets
import smtplib
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import format_datetime, make_msgid
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from .lifecycle import Server

__all__ = [
    "Accept",
    "AcceptThenBounce",
    "Behaviour",
    "ConnectionCap",
    "DataReply",
    "DisconnectInData",
    "GreetingReply",
    "Greylist",
    "MailReply",
    "MxServer",
    "GMAIL_RATE",
    "OUTLOOK_RATE",
    "RateLimit",
    "RcptReply",
    "Received",
    "RejectUnknown",
    "SessionCap",
    "Slow",
    "TlsHandshakeFailure",
    "YAHOO_TSS04",
    "build_dsn",
    "resolve_via_dns",
    "send_dsn_via_smtp",
]

log = logging.getLogger("outpost_local.mx")

# Stages a reply can belong to: the name of the command it answers, plus these two.
GREETING = "GREETING"  # the 220 banner
END_OF_DATA = "END_OF_DATA"  # the reply after "<CRLF>.<CRLF>"; "DATA" is the 354
STAGES = (GREETING, "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", END_OF_DATA, "RSET",
          "NOOP", "QUIT")


@dataclass
class Received:
    """One message the server accepted (a 250 was sent after end-of-data)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str
    tls: bool
    mail_options: list[str]
    rcpt_options: list[str]  # all recipients' options, flattened (see rcpt_params)
    rcpt_params: dict[str, list[str]] = field(default_factory=dict)
    helo: str = ""
    queue_id: str = ""

    def mail_param(self, name: str) -> str | None:
        """Value of a MAIL FROM parameter (e.g. "ENVID", "RET"), as sent."""
        return _param(self.mail_options, name)

    def rcpt_param(self, rcpt: str, name: str) -> str | None:
        """Value of a RCPT TO parameter (e.g. "NOTIFY", "ORCPT") for one recipient, as sent."""
        return _param(self.rcpt_params.get(rcpt, []), name)

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.data, policy=email.policy.default)


def _param(options: Iterable[str], name: str) -> str | None:
    for opt in options:
        key, eq, value = opt.partition("=")
        if key.upper() == name.upper():
            return value if eq else ""
    return None


# -- behaviours -----------------------------------------------------------------------------


class Behaviour:
    """Base class: every hook returns None ("no opinion") unless a subclass overrides it.

    Reply strings are complete SMTP replies, e.g. "550 5.1.1 <a@b>: User unknown".
    Hooks run on the server's event loop thread.
    """

    #: when True, STARTTLS is answered 220 and then the TLS handshake is made to fail
    breaks_tls: bool = False

    def greeting(self, server: MxSmtp) -> str | None:
        return None

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        return None

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        return None

    async def handle_MAIL(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str | None:
        return None

    async def handle_RCPT(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str | None:
        return None

    async def handle_DATA(self, server: MxSmtp, session: Session, envelope: Envelope) -> str | None:
        return None

    def on_accepted(self, received: Received) -> None:
        return None

    def on_disconnect(self, server: MxSmtp) -> None:
        return None


class Accept(Behaviour):
    """Accept everything: "250 2.0.0 Ok: queued as <id>" (the server's default)."""


class RejectUnknown(Behaviour):
    """RCPT for an address not in `known` -> 550 5.1.1, like Postfix's unknown-user reply.

    `known` holds full addresses or bare local parts; both compare case-insensitively (local
    parts are case-sensitive per RFC 5321 §2.4, but no real mailbox host treats them so).
    """

    def __init__(self, known: Iterable[str]) -> None:
        self.known = {k.lower() for k in known}

    def is_known(self, address: str) -> bool:
        address = address.lower()
        return address in self.known or address.rpartition("@")[0] in self.known

    async def handle_RCPT(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str | None:
        if self.is_known(address):
            return None
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


class Greylist(Behaviour):
    """451 4.7.1 at RCPT for the first attempt of a (client IP, sender domain, recipient)
    triplet; attempts at least `delay_seconds` later are accepted.

    The classic triplet uses the full sender, but Outpost's VERP return path changes per
    recipient and attempt, so this keys on the sender's domain (as postgrey's --lookup-by-host
    style setups effectively do).
    """

    def __init__(self, delay_seconds: float = 0, clock: Callable[[], float] = time.monotonic):
        self.delay_seconds = delay_seconds
        self.clock = clock
        self.first_seen: dict[tuple[str, str, str], float] = {}

    async def handle_RCPT(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str | None:
        ip = session.peer[0] if session.peer else ""
        sender_domain = (envelope.mail_from or "").rpartition("@")[2].lower()
        key = (ip, sender_domain, address.lower())
        now = self.clock()
        first = self.first_seen.get(key)
        if first is None:
            self.first_seen[key] = now
            return "451 4.7.1 Greylisted, please retry"
        if now - first < self.delay_seconds:
            return "451 4.7.1 Greylisted, please retry"
        return None


class _ScriptedReply(Behaviour):
    """Answer `code text` at one stage, for the first `times` matching commands (None: always)."""

    stage = ""

    def __init__(self, code: int, text: str, *, times: int | None = None) -> None:
        self.reply = f"{code} {text}"
        self.remaining = times

    def _take(self) -> str | None:
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return self.reply


class GreetingReply(_ScriptedReply):
    """Replace the 220 banner, e.g. GreetingReply(421, "4.3.2 Service shutting down").

    After a 421 banner the server closes the connection; after a 554 banner it answers only
    QUIT and refuses everything else with 503 (RFC 5321 §3.1).
    """

    def greeting(self, server: MxSmtp) -> str | None:
        return self._take()


class MailReply(_ScriptedReply):
    """Answer MAIL FROM with `code text`."""

    async def handle_MAIL(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str | None:
        return self._take()


class RcptReply(_ScriptedReply):
    """Answer RCPT TO with `code text`, e.g. RcptReply(452, "4.2.2 Mailbox full"), for every
    recipient or only for those in `only` (case-insensitive)."""

    def __init__(
        self, code: int, text: str, *, only: Iterable[str] | None = None, times: int | None = None
    ) -> None:
        super().__init__(code, text, times=times)
        self.only = None if only is None else {a.lower() for a in only}

    async def handle_RCPT(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str | None:
        if self.only is not None and address.lower() not in self.only:
            return None
        return self._take()


class DataReply(_ScriptedReply):
    """Answer end-of-data with `code text`, e.g. DataReply(554, "5.7.1 Message rejected")."""

    async def handle_DATA(self, server: MxSmtp, session: Session, envelope: Envelope) -> str | None:
        return self._take()


class DisconnectInData(Behaviour):
    """Drop the connection during the DATA phase.

    at="end" (default): after the whole message arrived but before the final reply, so the
    client cannot know whether the message was delivered (RFC 5321 §4.1.1.4 / §6.1: it must
    treat this as a temporary failure). at="start": instead of the 354. at="after_354": right
    after the 354, while the client is sending the content.
    """

    def __init__(self, at: str = "end") -> None:
        if at not in ("start", "after_354", "end"):
            raise ValueError("at must be 'start', 'after_354' or 'end'")
        self.at = at

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if (self.at, stage) in (("start", "DATA"), ("end", END_OF_DATA)):
            server.drop()

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        if self.at == "after_354" and stage == "DATA":
            server.drop()


class Slow(Behaviour):
    """Wait `seconds` before sending the reply at `stage` (one of STAGES), for timeout tests."""

    def __init__(self, stage: str, seconds: float) -> None:
        stage = stage.upper().replace("-", "_")
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        self.stage = stage
        self.seconds = seconds

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if stage == self.stage:
            await asyncio.sleep(self.seconds)


class TlsHandshakeFailure(Behaviour):
    """Offer STARTTLS, answer 220, then send a fatal TLS handshake_failure alert (RFC 8446
    §6.2) instead of a ServerHello and close: the client's handshake fails."""

    breaks_tls = True


class AcceptThenBounce(Behaviour):
    """Accept with 250, then (in a thread, after `delay` seconds) send an RFC 3464 DSN for
    the recipients (all, or those in `only`) to the message's return path.

    The DSN goes to `dsn_sender(dsn_bytes, return_path)` when given, otherwise by SMTP to the
    return path domain's MX as found by `resolve(domain) -> (host, port)`. Every DSN built is
    kept in `sent` (return_path, dsn) and every delivery error in `errors`.
    """

    def __init__(
        self,
        dsn_sender: Callable[[bytes, str], None] | None = None,
        *,
        resolve: Callable[[str], tuple[Any, ...]] | None = None,
        reporting_mta: str = "mx.test",
        status: str = "5.1.1",
        diagnostic: str = "smtp; 550 5.1.1 <addr>: mailbox unavailable",
        action: str = "failed",
        only: Iterable[str] | None = None,
        delay: float = 0.05,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if dsn_sender is None and resolve is None:
            raise ValueError("give dsn_sender or resolve")
        self.dsn_sender = dsn_sender
        self.resolve = resolve
        self.reporting_mta = reporting_mta
        self.status = status
        self.diagnostic = diagnostic
        self.action = action
        self.only = None if only is None else {a.lower() for a in only}
        self.delay = delay
        self.tls_context = tls_context
        self.sent: list[tuple[str, bytes]] = []
        self.errors: list[BaseException] = []
        self._done = threading.Condition()
        self._threads: list[threading.Thread] = []

    def on_accepted(self, received: Received) -> None:
        # Never bounce a bounce: a null return path gets no DSN (RFC 5321 §4.5.5, RFC 3461 §6).
        if not received.mail_from:
            return
        rcpts = [r for r in received.rcpt_tos if self.only is None or r.lower() in self.only]
        if not rcpts:
            return
        dsn = build_dsn(
            received, rcpts, reporting_mta=self.reporting_mta, status=self.status,
            diagnostic=self.diagnostic, action=self.action,
        )
        t = threading.Thread(target=self._deliver, args=(dsn, received.mail_from), daemon=True)
        self._threads.append(t)
        t.start()

    def _deliver(self, dsn: bytes, return_path: str) -> None:
        time.sleep(self.delay)
        try:
            if self.dsn_sender is not None:
                self.dsn_sender(dsn, return_path)
            else:
                assert self.resolve is not None
                send_dsn_via_smtp(
                    dsn, return_path, self.resolve, helo=self.reporting_mta,
                    tls_context=self.tls_context,
                )
        except BaseException as error:  # recorded for the test to assert on
            log.warning("DSN delivery to %s failed: %r", return_path, error)
            with self._done:
                self.errors.append(error)
                self._done.notify_all()
            return
        with self._done:
            self.sent.append((return_path, dsn))
            self._done.notify_all()

    def wait_sent(self, count: int = 1, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Block until `count` DSNs were delivered (or failed); returns the delivered ones."""
        with self._done:
            self._done.wait_for(lambda: len(self.sent) + len(self.errors) >= count, timeout)
            return list(self.sent)


# -- provider emulators (issue 11) ----------------------------------------------------------
#
# Mailbox providers throttle by client IP across all their MX hosts, so one emulator object
# may serve several MxServers (each on its own loop thread): its state sits behind a lock.

# The replies as providers send them ("{ip}" is the client's address).
GMAIL_RATE = (
    "421 4.7.28 [{ip}] Our system has detected an unusual rate of unsolicited mail originating "
    "from your IP address. To protect our users from spam, mail sent from your IP address has "
    "been temporarily rate limited."
)
OUTLOOK_RATE = (
    "451 4.7.650 The mail server [{ip}] has been temporarily rate limited due to IP reputation."
)
YAHOO_TSS04 = (
    "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user "
    "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
)
# Postfix's own reply to a client over smtpd_client_connection_count_limit.
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Error: too many connections from {ip}"
TOO_MANY_MESSAGES = "421 4.7.0 Too many messages in this session, closing connection"


def _client_ip(server: MxSmtp) -> str:
    peer = server.session.peer if server.session is not None else None
    return str(peer[0]) if peer else ""


class _Throttling(Behaviour):
    """Counters every provider emulator keeps: messages accepted (a 250 to end-of-data went
    out) and throttle replies sent, in total and per client IP. Thread safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.accepted = 0
        self.throttled = 0
        self.accepted_by_ip: collections.Counter[str] = collections.Counter()
        self.throttled_by_ip: collections.Counter[str] = collections.Counter()
        self._closing: weakref.WeakSet[MxSmtp] = weakref.WeakSet()

    def on_accepted(self, received: Received) -> None:
        with self.lock:
            self.accepted += 1
            self.accepted_by_ip[received.peer] += 1

    def _throttle(self, server: MxSmtp, reply: str, ip: str) -> str:
        """Count a throttle reply; a 421 closes the connection after it (RFC 5321 §3.8)."""
        with self.lock:
            self.throttled += 1
            self.throttled_by_ip[ip] += 1
        text = reply.format(ip=ip, host=server.mx.hostname)
        if text.startswith("421"):
            self._closing.add(server)
        return text

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        if server in self._closing and reply.startswith("421"):
            self._closing.discard(server)
            server.drop()

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {"accepted": self.accepted, "throttled": self.throttled}


class RateLimit(_Throttling):
    """At most `limit` messages per `window` seconds per client IP (a sliding window; with
    `fixed`, windows that start at multiples of `window` on the clock, like a per-calendar-
    minute counter; None: `limit` messages ever); each message over it is answered `reply` at
    `stage` ("MAIL", "RCPT" or END_OF_DATA). `block_for`: once over, the IP gets `reply` for
    that many seconds whatever the window says, and then starts afresh (Yahoo's TSS04
    deferral; Google asks for a pause of at least 10 minutes).

    A message counts when it is admitted at `stage` (once per transaction: at RCPT, the first
    recipient decides for the whole transaction), so concurrent connections cannot overshoot.
    Messages answered `reply` do not count. E.g. Gmail, 300 a minute:
    `RateLimit(300, 60, GMAIL_RATE, stage=END_OF_DATA)`.
    """

    def __init__(
        self, limit: int, window: float | None, reply: str, *, stage: str = "RCPT",
        block_for: float | None = None, fixed: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stage not in ("MAIL", "RCPT", END_OF_DATA):
            raise ValueError(f"stage must be MAIL, RCPT or {END_OF_DATA}")
        if limit < 0:
            raise ValueError("limit must be >= 0")
        super().__init__(clock)
        self.limit, self.window, self.reply, self.stage = limit, window, reply, stage
        self.block_for, self.fixed = block_for, fixed
        self._admitted: dict[str, collections.deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        # The decision for a transaction at RCPT, taken at its first recipient.
        self._decided: weakref.WeakKeyDictionary[Envelope, str | None] = weakref.WeakKeyDictionary()

    def admit(self, ip: str) -> bool:
        """Count one message from `ip` if the window has room; False: it is over the limit."""
        now = self.clock()
        with self.lock:
            until = self._blocked_until.get(ip)
            if until is not None:
                if now < until:
                    return False
                del self._blocked_until[ip]
                self._admitted.pop(ip, None)
            seen = self._admitted.setdefault(ip, collections.deque())
            if self.window is not None:
                start = now - now % self.window if self.fixed else now - self.window
                while seen and (seen[0] < start if self.fixed else seen[0] <= start):
                    seen.popleft()
            if len(seen) >= self.limit:
                if self.block_for is not None:
                    self._blocked_until[ip] = now + self.block_for
                return False
            seen.append(now)
            return True

    def _decide(self, server: MxSmtp) -> str | None:
        ip = _client_ip(server)
        return None if self.admit(ip) else self._throttle(server, self.reply, ip)

    async def handle_MAIL(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str | None:
        return self._decide(server) if self.stage == "MAIL" else None

    async def handle_RCPT(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str | None:
        if self.stage != "RCPT":
            return None
        if envelope not in self._decided:
            self._decided[envelope] = self._decide(server)
            return self._decided[envelope]
        verdict = self._decided[envelope]
        if verdict is not None:  # the rest of a throttled transaction, counted once
            with self.lock:
                self.throttled += 1
                self.throttled_by_ip[_client_ip(server)] += 1
        return verdict

    async def handle_DATA(self, server: MxSmtp, session: Session, envelope: Envelope) -> str | None:
        return self._decide(server) if self.stage == END_OF_DATA else None


class SessionCap(_Throttling):
    """At most `per_connection` messages per connection: the next MAIL FROM is answered
    `reply` (a 421 closes the connection), as providers that cap a session do."""

    def __init__(self, per_connection: int, reply: str = TOO_MANY_MESSAGES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.per_connection, self.reply = per_connection, reply
        self._sent: weakref.WeakKeyDictionary[MxSmtp, int] = weakref.WeakKeyDictionary()
        self.max_per_connection = 0  # the most messages accepted on one connection

    async def handle_MAIL(
        self, server: MxSmtp, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str | None:
        if self._sent.get(server, 0) >= self.per_connection:
            return self._throttle(server, self.reply, _client_ip(server))
        return None

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        if stage == END_OF_DATA and reply.startswith("2"):
            with self.lock:
                n = self._sent[server] = self._sent.get(server, 0) + 1
                self.max_per_connection = max(self.max_per_connection, n)
        await super().after_reply(stage, reply, server)

    def counters(self) -> dict[str, int]:
        out = super().counters()
        out["max_per_connection"] = self.max_per_connection
        return out


class ConnectionCap(_Throttling):
    """At most `max_connections` concurrent connections per client IP (None: no cap, only
    counted); one more is answered `reply` at the greeting and closed. Counts every
    connection, those refused, and the most open at once (admitted ones), per IP and in all.
    Put it first among the behaviours: a greeting another behaviour overrides is not counted.
    """

    def __init__(self, max_connections: int | None, reply: str = TOO_MANY_CONNECTIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.max_connections, self.reply = max_connections, reply
        self.connections = 0
        self.refused = 0
        self.open = 0
        self.max_concurrent = 0
        self.open_by_ip: collections.Counter[str] = collections.Counter()
        self.max_concurrent_by_ip: collections.Counter[str] = collections.Counter()
        self._admitted: weakref.WeakKeyDictionary[MxSmtp, str] = weakref.WeakKeyDictionary()

    def greeting(self, server: MxSmtp) -> str | None:
        ip = _client_ip(server)
        with self.lock:
            self.connections += 1
            if self.max_connections is not None and self.open_by_ip[ip] >= self.max_connections:
                self.refused += 1
                refuse = True
            else:
                refuse = False
                self._admitted[server] = ip
                self.open += 1
                self.open_by_ip[ip] += 1
                self.max_concurrent = max(self.max_concurrent, self.open)
                self.max_concurrent_by_ip[ip] = max(self.max_concurrent_by_ip[ip], self.open_by_ip[ip])
        return self._throttle(server, self.reply, ip) if refuse else None

    def on_disconnect(self, server: MxSmtp) -> None:
        with self.lock:
            ip = self._admitted.pop(server, None)
            if ip is not None:
                self.open -= 1
                self.open_by_ip[ip] -= 1

    def counters(self) -> dict[str, int]:
        out = super().counters()
        with self.lock:
            out.update(connections=self.connections, refused=self.refused, open=self.open,
                       max_concurrent=self.max_concurrent)
        return out


# -- DSN construction and delivery ----------------------------------------------------------


def _xtext_decode(value: str) -> str:
    # RFC 3461 §4: ENVID and ORCPT travel as xtext, "+XX" hex escapes for special octets.
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _headers_of(data: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = data.find(sep)
        if end >= 0:
            return data[: end + len(sep) // 2]
    return data


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def build_dsn(
    received: Received,
    rcpt: str | Sequence[str],
    *,
    reporting_mta: str = "mx.test",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <addr>: mailbox unavailable",
    action: str = "failed",
    remote_mta: str | None = None,
    arrival: float | None = None,
) -> bytes:
    """An RFC 3464 delivery status notification for `received`, for one or more recipients.

    multipart/report; report-type=delivery-status (RFC 6522) with a human-readable part, a
    message/delivery-status part, and the original headers (text/rfc822-headers), or the
    whole original message (message/rfc822) when the sender asked RET=FULL (RFC 3461 §4.3).
    "<addr>" in `diagnostic` is replaced by the recipient in angle brackets.
    """
    rcpts = [rcpt] if isinstance(rcpt, str) else list(rcpt)
    boundary = f"=_outpost_dsn_{secrets.token_hex(8)}"
    now_dt = datetime.datetime.now().astimezone()
    now = format_datetime(now_dt)
    arrival_date = format_datetime(
        now_dt if arrival is None else datetime.datetime.fromtimestamp(arrival).astimezone()
    )
    envid = received.mail_param("ENVID")
    ret_full = (received.mail_param("RET") or "").upper() == "FULL"

    text = (
        f"This is the mail system at host {reporting_mta}.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        + "".join(f"<{r}>: {diagnostic.replace('<addr>', f'<{r}>')}\r\n" for r in rcpts)
    )

    # Per-message fields, then one block of per-recipient fields each (RFC 3464 §2.2, §2.3).
    status_lines = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid is not None:
        status_lines.append(f"Original-Envelope-Id: {_xtext_decode(envid)}")
    status_lines.append(f"Arrival-Date: {arrival_date}")
    blocks = ["\r\n".join(status_lines)]
    for r in rcpts:
        fields = [f"Final-Recipient: rfc822; {r}"]
        orcpt = received.rcpt_param(r, "ORCPT")
        if orcpt:
            addr_type, _, addr = orcpt.partition(";")
            fields.append(f"Original-Recipient: {addr_type}; {_xtext_decode(addr)}")
        fields += [f"Action: {action}", f"Status: {status}"]
        if remote_mta:
            fields.append(f"Remote-MTA: dns; {remote_mta}")
        fields += [
            f"Diagnostic-Code: {diagnostic.replace('<addr>', f'<{r}>')}",
            f"Last-Attempt-Date: {now}",
        ]
        blocks.append("\r\n".join(fields))
    delivery_status = "\r\n\r\n".join(blocks) + "\r\n"

    if ret_full:
        original_type, original = "message/rfc822", _crlf(received.data)
        description = "Undelivered Message"
    else:
        original_type, original = "text/rfc822-headers", _crlf(_headers_of(received.data))
        description = "Undelivered Message Headers"

    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{received.mail_from}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n'
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
    )
    parts = [
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text,
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n" + delivery_status,
    ]
    out = head.encode()
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part.encode() + b"\r\n"
    out += (
        f"--{boundary}\r\nContent-Description: {description}\r\n"
        f"Content-Type: {original_type}\r\n\r\n"
    ).encode()
    out += original if original.endswith(b"\r\n") else original + b"\r\n"
    out += f"\r\n--{boundary}--\r\n".encode()
    return out


def send_dsn_via_smtp(
    dsn: bytes,
    return_path: str,
    resolve: Callable[[str], tuple[Any, ...]],
    *,
    helo: str = "mx.test",
    tls_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> str:
    """Deliver a DSN to the MX of the return path's domain, with the null reverse-path
    (MAIL FROM:<>, RFC 5321 §4.5.5). STARTTLS is used when offered and `tls_context` is given.
    Returns the server's reply to end-of-data; raises smtplib errors on failure."""
    domain = return_path.rpartition("@")[2]
    found = resolve(domain)
    host, port = found[0], found[1]
    mx_name = found[2] if len(found) > 2 else host  # type: ignore[misc]
    with smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout) as client:
        client.ehlo()
        if tls_context is not None and client.has_extn("starttls"):
            client._host = mx_name  # type: ignore[attr-defined]  # verify the certificate against the MX name, not the IP
            client.starttls(context=tls_context)
            client.ehlo()
        client.mail("")
        code, reply = client.rcpt(return_path)
        if code >= 300:
            raise smtplib.SMTPRecipientsRefused({return_path: (code, reply)})
        code, reply = client.data(dsn)
        if code >= 300:
            raise smtplib.SMTPDataError(code, reply)
        return f"{code} {reply.decode(errors='replace')}"


def resolve_via_dns(resolver: Any, port: int = 25) -> Callable[[str], tuple[str, int, str]]:
    """A `resolve` for send_dsn_via_smtp that uses DNS like an MTA: lowest-preference MX,
    its first A record; no MX -> the domain's own A record (RFC 5321 §5.1). Returns
    (address, port, MX name); the name is what the MX's certificate is checked against."""
    import dns.resolver

    def resolve(domain: str) -> tuple[str, int, str]:
        try:
            answers = sorted(resolver.resolve(domain, "MX"), key=lambda r: r.preference)
            target = str(answers[0].exchange)
        except dns.resolver.NoAnswer:
            target = domain
        return str(resolver.resolve(target, "A")[0]), port, target.rstrip(".")

    return resolve


# -- the SMTP protocol and the server -------------------------------------------------------


class MxSmtp(SMTP):
    """aiosmtpd's SMTP with the hooks this module needs.

    Overrides: MAIL and RCPT accept the null reverse-path and the DSN parameters and keep
    parameter values in their original case (aiosmtpd upper-cases them and refuses ENVID);
    every reply passes through `push`, which knows the stage it answers, runs the behaviours'
    before/after hooks and records the transcript.
    """

    def __init__(self, mx: MxServer, **kwargs: Any) -> None:
        self.mx = mx
        self._command: str | None = None
        self._command_line = "CONNECT"
        self._pending_lines: list[str] = []
        self._refused = False
        self._pending_received: Received | None = None
        super().__init__(_Dispatch(mx), **kwargs)
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._tracked(name, method)

    def _tracked(self, name: str, method: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(method)  # keeps aiosmtpd's @syntax metadata for HELP
        async def run(arg: str | None) -> None:
            self._command = name
            self._command_line = f"{name} {arg}" if arg else name
            if self._refused and name != "QUIT":
                await self.push("503 5.5.1 Bad sequence of commands")
                return
            await method(arg)

        return run

    def connection_lost(self, error: Exception | None) -> None:
        self.mx._protocols.discard(self)
        for b in self.mx.behaviours:
            b.on_disconnect(self)
        super().connection_lost(error)

    def drop(self) -> None:
        """Close the connection now, without a reply."""
        if self.transport is not None:
            self.transport.close()

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "surrogateescape") if isinstance(status, bytes) else status
        if self._command is None:
            stage = GREETING
            for b in self.mx.behaviours:
                override = b.greeting(self)
                if override is not None:
                    text = override
                    break
        elif self._command == "DATA":
            stage = "DATA" if text.startswith("354") else END_OF_DATA
        else:
            stage = self._command
        # Collect a multi-line reply ("250-...") so hooks and the log see it once.
        if len(text) > 3 and text[3] == "-":
            self._pending_lines.append(text)
            return
        lines, self._pending_lines = [*self._pending_lines, text], []
        for b in self.mx.behaviours:
            await b.before_reply(stage, self)
        if self._closing():
            self.mx._record(self._label(stage), "<disconnected>")
            return
        self.mx._record(self._label(stage), "\r\n".join(lines))
        for line in lines:
            await super().push(line)
        reply = "\r\n".join(lines)
        if stage == END_OF_DATA and self._pending_received is not None:
            received, self._pending_received = self._pending_received, None
            if reply.startswith("2"):
                self.mx._accept(received)
        for b in self.mx.behaviours:
            await b.after_reply(stage, reply, self)
        if stage == GREETING and not reply.startswith("2"):
            # 421 means closing (RFC 5321 §3.8); after 554 only QUIT is allowed (§3.1).
            if reply.startswith("421"):
                self.drop()
            else:
                self._refused = True

    def _label(self, stage: str) -> str:
        if stage == GREETING:
            return "CONNECT"
        if stage == END_OF_DATA:
            return "."
        return self._command_line

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_context and not arg and any(b.breaks_tls for b in self.mx.behaviours):
            await self.push("220 2.0.0 Ready to start TLS")
            # Wait for the ClientHello (closing with it unread would reset the connection
            # and the client would see a bare EOF), then answer with a TLS alert record:
            # type 21, version 3.3, length 2, level fatal(2), handshake_failure(40).
            try:
                await asyncio.wait_for(self._reader.read(4096), timeout=5)
            except (TimeoutError, ConnectionError):
                pass
            self._writer.write(b"\x15\x03\x03\x00\x02\x02\x28")
            await self._writer.drain()
            self.drop()
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        syntaxerr = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
        rest = self._strip_command_keyword("FROM:", arg or "")
        if rest is None:
            await self.push(syntaxerr)
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        params: str | None
        if rest.lstrip().startswith("<>"):
            address: str | None = ""
            params = rest.lstrip()[2:]
        else:
            address, params = self._getaddr(rest)
        if address is None or (address == "" and not rest.lstrip().startswith("<>")):
            await self.push("553 5.1.3 Error: malformed address")
            return
        options = _normalise_params((params or "").split())
        if options is None or (options and not self.session.extended_smtp):
            await self.push(syntaxerr)
            return
        for opt in options:
            key, _, value = opt.partition("=")
            if key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                continue
            if key == "SMTPUTF8" and not value and self.enable_SMTPUTF8:
                self.envelope.smtp_utf8 = True
                continue
            if key == "SIZE" and value.isdigit():
                if self.data_size_limit and int(value) > self.data_size_limit:
                    # RFC 1870 §6.1
                    await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
                    return
                continue
            if self.mx.dsn and (key == "ENVID" or (key == "RET" and value.upper() in
                                                   ("FULL", "HDRS"))):
                continue
            await self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        reply = await self.mx._ask("handle_MAIL", self, self.session, self.envelope, address,
                                   options) or "250 2.1.0 Ok"
        if reply.startswith("2"):
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(options)
        await self.push(reply)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        syntaxerr = "501 5.5.4 Syntax: RCPT TO:<address> [SP <rcpt-parameters>]"
        rest = self._strip_command_keyword("TO:", arg or "")
        if rest is None:
            await self.push(syntaxerr)
            return
        address, params = self._getaddr(rest)
        if not address:
            await self.push("553 5.1.3 Error: malformed address")
            return
        options = _normalise_params((params or "").split())
        if options is None or (options and not self.session.extended_smtp):
            await self.push(syntaxerr)
            return
        for opt in options:
            key, _, value = opt.partition("=")
            if self.mx.dsn and key in ("NOTIFY", "ORCPT") and value:
                continue
            await self.push("555 5.5.4 RCPT TO parameters not recognized or not implemented")
            return
        reply = await self.mx._ask("handle_RCPT", self, self.session, self.envelope, address,
                                   options) or "250 2.1.5 Ok"
        if reply.startswith("2"):
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(options)
            params_by_rcpt: dict[str, list[str]] = getattr(self.envelope, "rcpt_params", {})
            params_by_rcpt[address] = options
            self.envelope.rcpt_params = params_by_rcpt  # type: ignore[attr-defined]
        await self.push(reply)


def _normalise_params(params: list[str]) -> list[str] | None:
    # Keywords are case-insensitive, values are not (ENVID/ORCPT are compared verbatim by the
    # sender that issued them, RFC 3461 §4.4), so only the keyword is upper-cased.
    out = []
    for p in params:
        key, eq, value = p.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        out.append(f"{key.upper()}={value}" if eq else key.upper())
    return out


class _Dispatch:
    """The aiosmtpd handler object: EHLO keywords, DATA, exceptions."""

    def __init__(self, mx: MxServer) -> None:
        self.mx = mx

    async def handle_EHLO(
        self, server: MxSmtp, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd would offer AUTH after STARTTLS; an MX does not, so drop it and HELP.
        lines = [r[4:] for r in responses if not r[4:].startswith(("AUTH", "HELP"))]
        lines[1:1] = ["PIPELINING", "ENHANCEDSTATUSCODES"] + (["DSN"] if self.mx.dsn else [])
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_DATA(self, server: MxSmtp, session: Session, envelope: Envelope) -> str:
        queue_id = secrets.token_hex(5).upper()
        reply = await self.mx._ask("handle_DATA", server, session, envelope)
        if reply is None:
            reply = f"250 2.0.0 Ok: queued as {queue_id}"
        peer = session.peer[0] if session.peer else ""
        server._pending_received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            peer=peer,
            tls=session.ssl is not None,
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            rcpt_params=dict(getattr(envelope, "rcpt_params", {})),
            helo=session.host_name or "",
            queue_id=queue_id,
        )
        return reply

    async def handle_exception(self, error: Exception) -> str:
        log.debug("SMTP session error: %r", error)
        return f"451 4.3.0 Error: ({error.__class__.__name__}) {error}"


def serve_in_thread(open_server: Callable[[asyncio.AbstractEventLoop], Awaitable[asyncio.Server]],
                    name: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Server, threading.Thread]:
    """An asyncio server on its own event loop in a daemon thread: (loop, server, thread) once
    it listens, or the error that kept it from listening. Stopping the loop (loop.stop, from
    the thread-safe side) cancels what still runs on it and closes it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    errors: list[BaseException] = []
    servers: list[asyncio.Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            servers.append(loop.run_until_complete(open_server(loop)))
        except BaseException as error:  # noqa: BLE001 - raised in the starting thread
            errors.append(error)
            ready.set()
            loop.close()
            return
        loop.call_soon(ready.set)
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(10)
    if errors:
        thread.join()
        raise errors[0]
    if not servers:
        raise TimeoutError(f"{name}: not listening after 10 s")
    return loop, servers[0], thread


class MxServer(Server):
    """A scriptable MX host on `host:port` (port 0: pick a free one; see `.port` after start).

    STARTTLS is offered when `tls_context` is given; `require_starttls` refuses mail before it.
    `size_limit` advertises and enforces SIZE (RFC 1870); `smtputf8` and `dsn` advertise those
    extensions. `received` holds accepted messages, `log` the (command, reply) transcript.
    """

    def __init__(
        self,
        host: str,
        port: int,
        behaviour: Behaviour | Sequence[Behaviour] | None = None,
        tls_context: ssl.SSLContext | None = None,
        hostname: str = "mx.test",
        require_starttls: bool = False,
        *,
        size_limit: int | None = None,
        smtputf8: bool = True,
        dsn: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        if behaviour is None:
            behaviour = Accept()
        self.behaviours: list[Behaviour] = (
            [behaviour] if isinstance(behaviour, Behaviour) else list(behaviour)
        )
        self.tls_context = tls_context
        self.hostname = hostname
        self.require_starttls = require_starttls
        self.size_limit = size_limit
        self.smtputf8 = smtputf8
        self.dsn = dsn
        self.timeout = timeout
        self.received: list[Received] = []
        self.log: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._protocols: set[MxSmtp] = set()

    # -- hooks used by MxSmtp ---------------------------------------------------------------

    async def _ask(self, hook: str, *args: Any) -> str | None:
        for b in self.behaviours:
            reply: str | None = await getattr(b, hook)(*args)
            if reply is not None:
                return reply
        return None

    def _record(self, command: str, reply: str) -> None:
        with self._cond:
            self.log.append((command, reply))

    def _accept(self, received: Received) -> None:
        with self._cond:
            self.received.append(received)
            self._cond.notify_all()
        for b in self.behaviours:
            b.on_accepted(received)

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Block until at least `count` messages were accepted; returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{self.host}:{self.port} got {len(self.received)} of "
                                   f"{count} messages within {timeout}s")
            return list(self.received)

    def replies(self, command: str) -> list[str]:
        """Replies logged for commands starting with `command` (e.g. "RCPT", "CONNECT")."""
        with self._cond:
            return [r for c, r in self.log if c.upper().startswith(command.upper())]

    # -- lifecycle --------------------------------------------------------------------------

    def _factory(self) -> MxSmtp:
        assert self._loop is not None
        proto = MxSmtp(
            self,
            data_size_limit=self.size_limit,
            enable_SMTPUTF8=self.smtputf8,
            hostname=self.hostname,
            ident="ESMTP Outpost local MX",
            tls_context=self.tls_context,
            require_starttls=self.require_starttls,
            timeout=self.timeout,
            loop=self._loop,
        )
        self._protocols.add(proto)
        return proto

    def start(self) -> MxServer:
        if self._thread is not None:
            raise RuntimeError("MxServer already started")
        self._loop, server, self._thread = serve_in_thread(
            lambda loop: loop.create_server(self._factory, host=self.host, port=self.port), f"mx-{self.host}")
        self._server, self.port = server, server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for proto in list(self._protocols):
                for transport in (proto._original_transport, proto.transport):
                    if transport is not None:
                        transport.abort()  # type: ignore[attr-defined]
            self._protocols.clear()
            # One more turn so connection_lost callbacks run before the loop stops.
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=10)
        self._thread = None
