"""SMTP sessions with an MX host (aiosmtplib): connect, EHLO, STARTTLS, transactions, RSET.

Stage timeouts: connect+greeting 15 s and each command 20 s are shorter than RFC 5321
§4.5.3.2's (5 min) because a Lambda invocation lasts minutes, not hours; a slow MX is a host
failure and the next MX is tried. The reply to the final dot is different: the server may
already have taken the message, so giving up early is how duplicates happen (RFC 1047). The
end-of-data wait is RFC 5321 §4.5.3.2.6's 10 minutes, cut to what the invocation has left
(the sender passes `time_left`), and the final dot is never sent without at least
`end_of_data_min` (100 s) to wait for its reply: after the 354, a transaction with less time
left is abandoned by closing the connection without the dot, which the server discards
(NoTimeLeftError; no duplicate can come of it). One transaction (RSET, MAIL, RCPT, DATA, end of
data) needs 3 min 10 s of the sender's 300 s before it may start (`transaction_budget`).
(aiosmtplib waits for the 354 and for the final reply with one timeout, so the 354 also gets
the end-of-data timeout.) A failure below SMTP is raised as `StageError(command, cause)`, so
the attempt record names the command that was interrupted. A caller that must not wait on a
slow peer (the sender's new-mail lane) passes `send(..., dot_within=s)`: the transaction must
reach its final dot within s seconds, or it is abandoned before the dot with the connection
closed (SlowPeerError; the server discards it, RFC 5321 §4.1.1.4, so no copy can come of it).
Nothing cuts the wait for the reply to the final dot short.

Errors carry facts (errors.py): `_smtp_error` is the one map from aiosmtplib's exceptions to
them; trouble.judge() makes the verdicts. DeliveryService sees only the `Connector` and
`Session` protocols below, so a fake connector (tests/fakes/transport.py) can stand in.

A reused connection gets RSET before its next transaction (RFC 5321 §4.1.1.5). Besides
clearing any half-done transaction, the RSET probes the connection, as Postfix does before it
reuses a cached session: a server that dropped an idle connection costs a reconnect
(`StaleSessionError`), not the recipient an attempt.

TLS modes:
- opportunistic (default): STARTTLS whenever offered. The certificate is verified against the
  trust store and the MX name; if it does not verify, we reconnect and use TLS without
  verification (recorded as verified=False), as Postfix's "may" level does. A failed handshake
  is retried once on a fresh connection with a permissive context (TLS 1.0 and 1.1 allowed,
  OpenSSL security level 0, no verification): Postfix's "may" level still encrypts with a
  server stuck on TLS 1.0, where our TLS 1.2 minimum would fail (issue 8 item 20). Only if that
  fails too do we fall back to plaintext on a fresh connection, as Postfix does, so a broken
  TLS stack on the only MX does not stop mail for good. A refused STARTTLS (e.g. "454 4.7.0 TLS
  not available", RFC 3207 §4 leaves the choice to the client) also continues in plaintext.
- required (per message, `"tls": "required"`): TLS must be negotiated, with the same
  permissive retry (Postfix's "encrypt" accepts TLS 1.0+ too); never plaintext. The
  certificate is not required to verify (recorded verified=false).
- verify (per message, `"tls": "verified"`, and MTA-STS enforce): TLS 1.2 or later with a
  certificate valid for the MX name (trust store, RFC 6125 name check), or no delivery: 4.7.5,
  transient at host scope, so the next MX is tried and the recipient is deferred.

PIPELINING (RFC 2920): when the server's EHLO lists it, a transaction's RSET (a reused
session), MAIL, RCPT and DATA go in one write and their replies are read in order
(pipelining.py), so they cost one round trip instead of four; the replies are judged exactly as
the serial dialogue's. Without it (or with SmtpConnector(pipelining=False)) the dialogue is
serial, as before. CHUNKING/BDAT (RFC 3030) is not used: it would save no round trip here (the
content and its final reply are one already).

Every fallback is a full reconnect. `open(..., budget=s)` starts none that cannot finish
(connect, EHLO, STARTTLS, EHLO) within `budget` seconds of the call: the caller's deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address

from ..errors import (
    NoTimeLeftError,
    OutpostError,
    ReplyError,
    RequirementError,
    SlowPeerError,
    StageError,
    StaleSessionError,
)
from .pipelining import PipelinedGroup, command_line
from .trouble import SmtpReply

TlsMode = Literal["opportunistic", "required", "verify"]
T = TypeVar("T")
_DOT = re.compile(rb"(?m)^\.")
_QUEUE_ID = re.compile(r"(?:queued as|id=|queue id)\s*<?([\w.@-]+)>?", re.I)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15.0  # TCP connect and the 220 greeting
    command: float = 20.0  # EHLO, STARTTLS, MAIL, RCPT, DATA, RSET
    end_of_data: float = 600.0  # RFC 5321 §4.5.3.2.6: the longest wait for the final reply
    end_of_data_min: float = 100.0  # no final dot is sent unless it can wait this long for the reply
    data_transfer: float = 180.0  # Postfix smtp_data_xfer_timeout: each write of the content to drain

    @property
    def transaction_budget(self) -> float:
        """The time one transaction needs: no new one starts with less time than this left."""
        # RSET (a reused session), MAIL, RCPT, DATA, then the end-of-data reply.
        return 4 * self.command + min(self.end_of_data, self.end_of_data_min)

    @property
    def session_budget(self) -> float:
        """The time one connection needs to open: connect, EHLO, STARTTLS, EHLO again."""
        return self.connect + 3 * self.command


@dataclass(frozen=True)
class TlsInfo:
    version: str | None = None
    cipher: str | None = None
    verified: bool = False

    def as_dict(self) -> dict:
        return {"version": self.version, "cipher": self.cipher, "verified": self.verified}


# Failures below SMTP: the socket, TLS, a timeout, a lost connection.
_WIRE_ERRORS = (OSError, EOFError, TimeoutError, aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPTimeoutError)


def _smtp_error(exc: BaseException, command: str, *, after_dot: bool = False,
                lane_limit: float | None = None) -> OutpostError:
    """The one map from aiosmtplib's exceptions (and the socket's) to Outpost's facts: a
    negative reply keeps its code and text and the command it answered; anything else (a
    timeout, a lost connection, a reply that could not be read) is a failure below SMTP at
    that command. `after_dot`: the final dot had been sent when it happened. `lane_limit`:
    the wait was cut short by the caller's limit before the final dot (`dot_within`), so its
    timeout is SlowPeerError (the lane's limit ran out), not a failure of the host."""
    if isinstance(exc, OutpostError):
        return exc
    if lane_limit is not None and not after_dot and isinstance(exc, TimeoutError):
        return SlowPeerError(command, lane_limit)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return ReplyError(first.code, first.message, "RCPT")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code != SMTPStatus.invalid_response:
        return ReplyError(exc.code, exc.message, command)
    return StageError(command, exc, after_dot=after_dot)


class Session(Protocol):
    """One open SMTP session with one MX host, as DeliveryService sees it."""

    mx_name: str
    ip: str
    tls: TlsInfo | None

    @property
    def is_open(self) -> bool: ...

    async def reset(self) -> None:
        """RSET; StaleSessionError (and the session closed) when it is no longer usable."""

    async def send(self, sender: str, rcpt: str, data: bytes | Sequence[bytes], *, envid: str | None = None,
                   utf8: bool = False, time_left: Callable[[], float] | None = None,
                   dot_within: float | None = None) -> SmtpReply:
        """One transaction (RSET first on a reused session). Returns the 2xx end-of-data
        reply; raises ReplyError, RequirementError, StageError, StaleSessionError,
        NoTimeLeftError or SlowPeerError. A failure that leaves the session unusable closes it.
        `dot_within`: seconds the transaction may take up to the final dot (RSET, MAIL, RCPT,
        the 354, the content); past them it is abandoned before the dot (SlowPeerError, the
        session closed). The wait for the reply to the final dot is never cut (RFC 1047)."""
        ...

    async def close(self) -> None:
        """QUIT and close; best effort."""


class Connector(Protocol):
    """Opens sessions (SmtpConnector; a fake in tests). Built in bootstrap and passed in."""

    timeouts: Timeouts

    async def open(self, mx_name: str, ip: str, tls_mode: TlsMode = "opportunistic", *,
                   budget: float | None = None, time_left: Callable[[], float] | None = None) -> Session:
        """A session with `ip`, or ReplyError / StageError / RequirementError / NoTimeLeftError."""
        ...


CHUNK = 1 << 20  # bytes of content normalised and written at a time
_CRLF = re.compile(rb"\r\n|\r|\n")  # any line ending -> CRLF (RFC 5321 §2.3.8)


def _pieces(parts: tuple[bytes, ...]) -> Iterator[bytes]:
    """The content in pieces of about CHUNK bytes that each end at a line end (so that
    dot-stuffing a piece on its own is right), across the parts (DKIM-Signature, message).
    A line longer than CHUNK is one piece; only the last piece may end without a newline."""
    carry = b""
    for part in parts:
        pos, n = 0, len(part)
        while pos < n:
            end = min(pos + CHUNK, n)
            if end < n:
                nl = part.rfind(b"\n", pos, end)
                if nl < 0:
                    nl = part.find(b"\n", end)
                end = n if nl < 0 else nl + 1
            piece = part[pos:end]
            pos = end
            if carry:
                piece, carry = carry + piece, b""
            if not piece.endswith(b"\n"):
                carry = piece  # a part that ends mid-line: joined to the next part's start
                continue
            yield piece
    if carry:
        yield carry


def remote_queue_id(text: str) -> str | None:
    """The receiving server's queue id from its 250 text, when it says one (Postfix, Exim...)."""
    m = _QUEUE_ID.search(text)
    return m.group(1) if m else None


def _xtext(value: str) -> str:
    """RFC 3461 §4 xtext for ORCPT."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


@dataclass
class _DotLimit:
    """A transaction's `dot_within` (send()): the timeout of each wait before the final dot
    is its own, or what is left of the lane's seconds when that is shorter. Past them the
    session is closed and SlowPeerError raised. `cut`: the wait in progress was shortened to
    the lane's limit, so its timeout is the lane's (a slow peer), not a failure of the host."""

    smtp: aiosmtplib.SMTP
    within: float | None
    cut: bool = False
    stop: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.stop = None if self.within is None else time.monotonic() + self.within

    def timeout(self, timeout: float, command: str) -> float:
        """The timeout of one wait before the final dot, at `command`."""
        if self.stop is None:
            return timeout
        left = self.stop - time.monotonic()
        if left <= 0:
            self.smtp.close()
            raise SlowPeerError(command, self.within or 0.0)
        self.cut = left < timeout
        return min(timeout, left)

    @property
    def lane_limit(self) -> float | None:
        """The lane's limit when the last wait was cut to it (_smtp_error's `lane_limit`)."""
        return (self.within or 0.0) if self.cut else None


@dataclass
class SmtpSession:
    smtp: aiosmtplib.SMTP
    mx_name: str
    ip: str
    tls: TlsInfo | None
    timeouts: Timeouts
    transactions: int = 0
    dot_sent: bool = False  # the last transaction got as far as the final dot
    dirty: bool = False
    log: list[str] = field(default_factory=list)
    pipelining: bool = True  # RFC 2920 when the server offers it (SmtpConnector's `pipelining`)

    def supports(self, ext: str) -> bool:
        return self.smtp.supports_extension(ext)

    @property
    def size_limit(self) -> int | None:
        raw = self.smtp.esmtp_extensions.get("size", "")
        return int(raw) if raw.strip().isdigit() and int(raw) > 0 else None

    @property
    def reused(self) -> bool:
        return self.transactions > 0 or self.dirty

    @property
    def is_open(self) -> bool:
        return self.smtp.is_connected

    async def reset(self) -> None:
        """RSET before reusing the connection; StaleSessionError when it is no longer usable."""
        await self._reset(self.timeouts.command)

    async def _reset(self, timeout: float, lane_limit: float | None = None) -> None:
        """RSET within `timeout`; `lane_limit`: that timeout is what the caller's `dot_within`
        left, so running out of it is SlowPeerError (a slow peer), not a stale session."""
        try:
            reply = await self.smtp.rset(timeout=timeout)
        except (aiosmtplib.SMTPResponseException, *_WIRE_ERRORS) as exc:
            self.smtp.close()
            fact = _smtp_error(exc, "RSET", lane_limit=lane_limit)
            if isinstance(fact, SlowPeerError):
                raise fact from None
            raise StaleSessionError(f"RSET on a reused connection to {self.mx_name} failed: {exc}") from None
        self.log.append(f"RSET {reply.code}")
        self.dirty = False

    async def send(self, sender: str, rcpt: str, data: bytes | Sequence[bytes], *, envid: str | None = None,
                   utf8: bool = False, time_left: Callable[[], float] | None = None,
                   dot_within: float | None = None) -> SmtpReply:
        """One transaction for one recipient. Returns the end-of-data reply (2xx).

        The reply to the final dot is awaited for `timeouts.end_of_data`, or for `time_left()`
        (seconds, read after the 354) when that is shorter: the sender passes what its
        invocation has left once the outcome is recorded.

        `dot_within` (a lane that must not wait on a slow peer): every wait before the final
        dot (the RSET, MAIL, RCPT and DATA replies, each write of the content to drain) gets
        at most what is left of these seconds from the start of the transaction. When they
        run out, the transaction is abandoned: the session is closed, never reused, because
        after a command timeout its state is unknown (a late reply would answer the next
        command), which is what every MTA does on a command timeout (Postfix's smtp client,
        RFC 5321 §4.5.3.2). The dot has not been sent, so the server discards the transaction
        (RFC 5321 §4.1.1.4): no copy can come of it. The wait for the reply to the final dot
        is never cut: the server may have taken the message (RFC 1047).

        Raises ReplyError for a negative reply, RequirementError for what we refuse to try,
        StageError for a failure below SMTP (disconnect, timeout), StaleSessionError when the
        RSET that precedes a reused transaction fails, NoTimeLeftError when the final dot is
        not sent for lack of time, SlowPeerError when `dot_within` ran out before the dot. A
        failure that leaves the session unusable closes it.
        """
        parts = (data,) if isinstance(data, bytes) else tuple(data)
        self.dot_sent = False
        limit = _DotLimit(self.smtp, dot_within)
        if self.reused and not (self.pipelining and self.supports("pipelining")):
            wait = limit.timeout(self.timeouts.command, "RSET")
            await self._reset(wait, limit.lane_limit)
        if self.pipelining and self.supports("pipelining"):
            # RFC 2920: RSET, MAIL, RCPT and DATA in one write (pipelining.py).
            reply = await self._pipelined(sender, rcpt, parts, envid=envid, utf8=utf8, time_left=time_left,
                                          limit=limit)
            self.transactions += 1
            self.dirty = False
            return SmtpReply(reply.code, reply.message, "EOD")
        mail_opts, rcpt_opts = self._envelope(parts, rcpt, envid=envid, utf8=utf8)
        self.dirty = True
        reply = await self._transaction(sender, rcpt, parts, (mail_opts, rcpt_opts), utf8=utf8,
                                        time_left=time_left, limit=limit)
        self.transactions += 1
        self.dirty = False
        return SmtpReply(reply.code, reply.message, "EOD")

    def _envelope(self, parts: tuple[bytes, ...], rcpt: str, *, envid: str | None, utf8: bool
                  ) -> tuple[list[str], list[str]]:
        """The MAIL and RCPT options the content and the server's extensions call for;
        RequirementError for what the server already said it cannot take."""
        size = sum(len(p) for p in parts)
        mail_opts: list[str] = []
        rcpt_opts: list[str] = []
        limit = self.size_limit if self.supports("size") else None
        if limit is not None and size > limit:
            # RFC 1870 §6: do not send what the server already said it will refuse.
            raise RequirementError(f"message of {size} bytes exceeds the server's SIZE {limit}",
                                   lacks="size", command="MAIL", limit=limit)
        if self.supports("size"):
            mail_opts.append(f"SIZE={size}")
        if utf8:
            if not self.supports("smtputf8"):
                # RFC 6531 §3.2 / RFC 6532: no downgrade for internationalised addresses.
                raise RequirementError("the address needs SMTPUTF8, which the server does not offer",
                                       lacks="smtputf8", command="MAIL")
            mail_opts.append("SMTPUTF8")
        if not all(p.isascii() for p in parts):
            # RFC 6152: 8-bit content needs BODY=8BITMIME (mime.py keeps bodies 7-bit, so this
            # only happens with SMTPUTF8 headers, which imply 8BITMIME, RFC 6531 §3.1).
            if not self.supports("8bitmime"):
                raise RequirementError("8-bit content and the server does not offer 8BITMIME",
                                       lacks="8bitmime", command="MAIL")
            mail_opts.append("BODY=8BITMIME")
        if self.supports("dsn"):
            # RFC 3461: ask for failure and delay reports with our id, headers only.
            mail_opts.append("RET=HDRS")
            if envid:
                mail_opts.append(f"ENVID={_xtext(envid)}")
            rcpt_opts.append("NOTIFY=FAILURE,DELAY")
            if rcpt.isascii():
                rcpt_opts.append(f"ORCPT=rfc822;{_xtext(rcpt)}")
        return mail_opts, rcpt_opts

    async def _transaction(self, sender: str, rcpt: str, parts: tuple[bytes, ...],
                           options: tuple[list[str], list[str]], *, utf8: bool,
                           time_left: Callable[[], float] | None, limit: _DotLimit) -> aiosmtplib.SMTPResponse:
        """MAIL, RCPT, DATA and the content with its end of data: the 2xx final reply, or the
        failure mapped to Outpost's facts (_smtp_error) at the command it interrupted."""
        t = self.timeouts
        mail_opts, rcpt_opts = options
        stage = "MAIL"
        try:
            # RFC 6531 §3.3: with SMTPUTF8 the envelope addresses travel as UTF-8.
            encoding = "utf-8" if utf8 else "ascii"
            await self.smtp.mail(sender, options=mail_opts, encoding=encoding,
                                 timeout=limit.timeout(t.command, stage))
            stage = "RCPT"
            await self.smtp.rcpt(rcpt, options=rcpt_opts, encoding=encoding, timeout=limit.timeout(t.command, stage))
            stage = "DATA"
            start = await self.smtp.execute_command(b"DATA", timeout=limit.timeout(t.command, stage))
            if start.code != SMTPStatus.start_input:
                raise ReplyError(start.code, start.message, "DATA")
            stage = "EOD"
            return await self._end_of_data(parts, time_left, limit)
        except OutpostError:
            raise
        except (aiosmtplib.SMTPException, *_WIRE_ERRORS) as exc:
            fact, cause = self._failed(exc, stage, limit)
            raise fact from cause
        except Exception:
            self.smtp.close()  # a bug: judged by the caller (unanticipated means transient)
            raise

    def _failed(self, exc: BaseException, stage: str, limit: _DotLimit) -> tuple[OutpostError, BaseException | None]:
        """A transaction's (serial or pipelined) wire or SMTP failure at `stage`: the fact to raise
        (_smtp_error) and its cause. Below SMTP, the session is in an unknown state and is closed
        (not reused)."""
        fact = _smtp_error(exc, stage, after_dot=self.dot_sent, lane_limit=limit.lane_limit)
        if not isinstance(fact, ReplyError):
            self.smtp.close()
        return fact, (exc if isinstance(fact, StageError) else None)

    async def _end_of_data(self, parts: tuple[bytes, ...], time_left: Callable[[], float] | None,
                           limit: _DotLimit) -> aiosmtplib.SMTPResponse:
        """After the 354: the content and the final dot, only with time to hear the reply."""
        t = self.timeouts
        wait = t.end_of_data if time_left is None else max(0.0, min(time_left(), t.end_of_data))
        if wait < min(t.end_of_data, t.end_of_data_min):
            # Sending the dot now could leave the server's 250 unheard (a duplicate on
            # retry, RFC 1047); without the dot it discards the message (RFC 5321 §4.1.1.4).
            self.smtp.close()
            raise NoTimeLeftError(f"{wait:.0f} s left to wait for the end-of-data reply; not sending the dot",
                                  "EOD")
        reply = await self._content(parts, wait, lambda timeout: limit.timeout(timeout, "EOD"))
        if reply.code // 100 != 2:
            raise ReplyError(reply.code, reply.message, "EOD")
        return reply

    async def _content(self, parts: tuple[bytes, ...], timeout: float,
                       before_dot: Callable[[float], float] = lambda timeout: timeout) -> aiosmtplib.SMTPResponse:
        """Send the content after the 354 and wait for the end-of-data reply (for `timeout`).
        `before_dot(t)`: the timeout of each wait for the content to drain (send()'s limit).

        aiosmtplib's data() sends DATA and the content under one timeout and one error type;
        doing the second half here keeps the DATA reply and the end-of-data reply apart (a
        refusal of the content is not a refusal of the DATA command) and gives each its own
        timeout. Line endings normalised and dot-stuffing per RFC 5321 §4.5.2, a piece of at
        most about CHUNK bytes at a time, each written once the socket has drained the last:
        a 40 MB message costs a megabyte here, not four copies of itself (issue 8 item 13).
        """
        proto = self.smtp.protocol
        if proto is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the content")
        # Replies that arrive while we write (a server refusing mid-content) are kept for the
        # read below rather than dropped as unsolicited (aiosmtplib's protocol keeps only what
        # arrives while a response is pending).
        proto._response_pending = True
        last = b""
        for piece in _pieces(parts):
            piece = _DOT.sub(b"..", _CRLF.sub(b"\r\n", piece))
            proto.write(piece)
            last = piece[-2:]
            wait = before_dot(self.timeouts.data_transfer)  # may raise: before the coroutine exists
            await asyncio.wait_for(proto._drain_helper(), wait)
        if _answered_before_dot(proto):
            # A 2xx before the dot answers nothing we sent: the dot is withheld (the server
            # discards the transaction, RFC 5321 §4.1.1.4) and the session closed by the caller.
            raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response,
                                                   "a positive reply came before the end of data")
        proto.write(b".\r\n" if last == b"\r\n" else b"\r\n.\r\n")
        self.dot_sent = True
        return await proto.read_response(timeout=timeout)

    # ---- RFC 2920 PIPELINING (pipelining.py) -------------------------------------------------
    async def _pipelined(self, sender: str, rcpt: str, parts: tuple[bytes, ...], *, envid: str | None,
                         utf8: bool, time_left: Callable[[], float] | None,
                         limit: _DotLimit) -> aiosmtplib.SMTPResponse:
        """send() with PIPELINING: [RSET,] MAIL, RCPT and DATA in one write, then their replies
        in order, each within its own command timeout (or what `dot_within` leaves), so the
        group costs one round trip where the serial dialogue costs four; then the content and
        the end of data as without. The replies are judged exactly as the serial dialogue's
        (a refused MAIL or RCPT is the same ReplyError, a failed RSET the same
        StaleSessionError), after all of them were read (RFC 2920 §3.1)."""
        mail_opts, rcpt_opts = self._envelope(parts, rcpt, envid=envid, utf8=utf8)
        encoding = "utf-8" if utf8 else "ascii"  # RFC 6531 §3.3
        reset = self.reused
        lines = [b"RSET\r\n"] if reset else []
        lines += [command_line(b"MAIL", b"FROM:" + quote_address(sender).encode(encoding),
                               *(o.encode("ascii") for o in mail_opts)),
                  command_line(b"RCPT", b"TO:" + quote_address(rcpt).encode(encoding),
                               *(o.encode("ascii") for o in rcpt_opts)),
                  b"DATA\r\n"]
        stage = "RSET" if reset else "MAIL"
        try:
            async with PipelinedGroup(self.smtp, lines) as group:
                if reset:
                    await self._pipelined_reset(group, limit)
                self.dirty = True
                replies = await self._group_replies(group, limit)
            stage = await self._judge_group(*replies)
            return await self._end_of_data(parts, time_left, limit)
        except OutpostError:
            raise
        except (aiosmtplib.SMTPException, *_WIRE_ERRORS) as exc:
            fact, cause = self._failed(exc, stage, limit)
            raise fact from cause
        except Exception:
            self.smtp.close()  # a bug: judged by the caller (unanticipated means transient)
            raise

    async def _group_replies(self, group: PipelinedGroup, limit: _DotLimit) -> list[aiosmtplib.SMTPResponse]:
        """The MAIL, RCPT and DATA replies. A refusal followed by a lost connection (a 421 to
        RCPT, then the server hangs up: RFC 5321 §3.8) is that refusal, as in the serial
        dialogue, which would have stopped at it; the session is closed."""
        replies: list[aiosmtplib.SMTPResponse] = []
        for stage in ("MAIL", "RCPT", "DATA"):
            try:
                replies.append(await group.reply(limit.timeout(self.timeouts.command, stage)))
            except (aiosmtplib.SMTPException, *_WIRE_ERRORS) as exc:
                self.smtp.close()  # below SMTP (or a reply that could not be read): not reused
                refusal = _first_refusal(replies)
                if refusal is not None:
                    raise ReplyError(refusal[0].code, refusal[0].message, refusal[1]) from None
                raise _smtp_error(exc, stage, lane_limit=limit.lane_limit) from exc
        return replies

    async def _pipelined_reset(self, group: PipelinedGroup, limit: _DotLimit) -> None:
        """The RSET that leads a reused session's group, judged as reset() judges it: a session
        that cannot answer it is stale (closed; the caller reconnects), or, when the lane's
        limit ran out, a slow peer. Nothing after it was delivered: the dot was not sent."""
        try:
            reply = await group.reply(limit.timeout(self.timeouts.command, "RSET"))
            if reply.code // 100 != 2:
                raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
        except (aiosmtplib.SMTPResponseException, *_WIRE_ERRORS) as exc:
            self.smtp.close()
            fact = _smtp_error(exc, "RSET", lane_limit=limit.lane_limit)
            if isinstance(fact, SlowPeerError):
                raise fact from None
            raise StaleSessionError(f"RSET on a reused connection to {self.mx_name} failed: {exc}") from None
        self.log.append(f"RSET {reply.code}")
        self.dirty = False

    async def _judge_group(self, mail: aiosmtplib.SMTPResponse, rcpt: aiosmtplib.SMTPResponse,
                           data: aiosmtplib.SMTPResponse) -> str:
        """The group's replies as the serial dialogue would have met them: the first refusal is
        the ReplyError (MAIL: not 250, RCPT: not 250/251, DATA: not 354, as aiosmtplib's mail()
        and rcpt() judge). RFC 2920 §3.1: with no recipient accepted, a DATA that was accepted
        anyway gets a lone dot (an empty message the server has nobody to deliver to); one that
        was refused needs nothing (the next transaction starts with RSET). Returns the stage
        that comes next ("EOD")."""
        refused = _first_refusal([mail, rcpt])
        if refused is not None:
            if data.code == SMTPStatus.start_input:
                await self._lone_dot()
            raise ReplyError(refused[0].code, refused[0].message, refused[1])
        if data.code != SMTPStatus.start_input:
            raise ReplyError(data.code, data.message, "DATA")
        return "EOD"

    async def _lone_dot(self) -> None:
        """End the empty message a DATA accepted with no recipient (RFC 2920 §3.1). However the
        server answers (or not), the refusal stays the outcome: a session whose lone dot went
        unanswered is closed, never reused."""
        proto = self.smtp.protocol
        try:
            if proto is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the dot")
            proto._response_pending = True
            proto.write(b".\r\n")
            await proto.read_response(timeout=self.timeouts.command)
        except (aiosmtplib.SMTPException, *_WIRE_ERRORS):
            self.smtp.close()

    async def close(self) -> None:
        """QUIT and close; best effort."""
        try:
            if self.smtp.is_connected:
                await self.smtp.quit(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort
            self.smtp.close()


def _answered_before_dot(proto: aiosmtplib.protocol.SMTPProtocol) -> bool:
    """A positive reply (or the start of one) already received while the content was written:
    it cannot be the end-of-data reply, so it must never count as a delivery. A refusal
    mid-content (4xx/5xx) stays what it is: the reply read after the dot."""
    waiter = proto._response_waiter
    if waiter is not None and waiter.done() and not waiter.cancelled() and waiter.exception() is None:
        return waiter.result().code // 100 == 2
    return bytes(proto._buffer[:1]) == b"2"


def legacy_tls_context() -> ssl.SSLContext:
    """TLS 1.0 and later, every cipher OpenSSL still has (security level 0), no verification:
    the last try before plaintext with a server that cannot do TLS 1.2 (Postfix "may" uses the
    library's defaults, which on most MTAs still include TLS 1.0). OpenSSL 3 refuses TLS 1.0
    and 1.1 at its default security level 1 for lack of a SHA-1-free signature algorithm, so
    level 0 is needed on our side; a server that only speaks SSLv3 still fails (no OpenSSL 3
    build offers it) and gets plaintext."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1 is deprecated
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _first_refusal(replies: Sequence[aiosmtplib.SMTPResponse]) -> tuple[aiosmtplib.SMTPResponse, str] | None:
    """The first refusal among a pipelined group's MAIL and RCPT replies, and its command, as
    aiosmtplib's mail() (not 250) and rcpt() (not 250 or 251) judge them."""
    for reply, command, good in zip(replies, ("MAIL", "RCPT"), ((250,), (250, 251)), strict=False):
        if reply.code not in good:
            return reply, command
    return None


class SmtpConnector:
    """Opens sessions. Built once per container in bootstrap with the EHLO name and trust store."""

    def __init__(self, ehlo_hostname: str, *, port: int = 25, ca_bundle: str | None = None,
                 timeouts: Timeouts | None = None, pipelining: bool = True) -> None:
        self.ehlo_hostname = ehlo_hostname
        self.pipelining = pipelining  # False: the serial dialogue even where PIPELINING is offered
        self.port = port
        self.timeouts = timeouts or Timeouts()
        self._verify = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self._verify.minimum_version = ssl.TLSVersion.TLSv1_2
        self._any = ssl.create_default_context()
        self._any.check_hostname = False
        self._any.verify_mode = ssl.CERT_NONE
        self._legacy = legacy_tls_context()

    def _fits(self, time_left: Callable[[], float] | None, what: str, *, first: bool = False) -> None:
        """Refuse to start a (re)connect that cannot finish before the caller's deadline. The
        first connect needs its connect time (a slow EHLO or STARTTLS is caught by the caller's
        check before the transaction); a fallback reconnect needs a whole session budget."""
        t = self.timeouts
        need = t.connect if first else t.session_budget
        if time_left is not None and time_left() < need:
            raise StageError("STARTTLS", TimeoutError(f"no time left for {what}"))

    async def _reconnect(self, ip: str, end: Callable[[], float] | None, what: str) -> aiosmtplib.SMTP:
        self._fits(end, what)
        return await self._connect(ip)

    async def _connect(self, ip: str) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(hostname=ip, port=self.port, local_hostname=self.ehlo_hostname,
                               timeout=self.timeouts.command, start_tls=False, use_tls=False,
                               validate_certs=False)
        try:
            # The connect timeout covers the TCP handshake and the 220 greeting.
            await smtp.connect(timeout=self.timeouts.connect)
        except (aiosmtplib.SMTPConnectResponseError, *_WIRE_ERRORS) as exc:
            smtp.close()
            fact = _smtp_error(exc, "CONNECT")
            raise fact from (exc if isinstance(fact, StageError) else None)
        try:
            await self._ehlo(smtp)
        except _WIRE_ERRORS as exc:
            smtp.close()
            raise _smtp_error(exc, "EHLO") from exc
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo(timeout=self.timeouts.command)
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code == SMTPStatus.domain_unavailable:
                raise _smtp_error(exc, "EHLO") from None
            try:
                await smtp.helo(timeout=self.timeouts.command)
            except aiosmtplib.SMTPHeloError as exc2:
                raise _smtp_error(exc2, "EHLO") from None

    async def _starttls(self, smtp: aiosmtplib.SMTP, mx_name: str, ctx: ssl.SSLContext) -> TlsInfo:
        try:
            await smtp.starttls(server_hostname=mx_name, tls_context=ctx, timeout=self.timeouts.command)
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_error(exc, "STARTTLS") from None
        obj = smtp.get_transport_info("ssl_object")
        await self._ehlo(smtp)  # RFC 3207 §4.2: forget what was said before TLS
        cipher = obj.cipher() if obj else None
        return TlsInfo(obj.version() if obj else None, cipher[0] if cipher else None, ctx is self._verify)

    async def _legacy_starttls(self, smtp: aiosmtplib.SMTP, mx_name: str, tls_mode: TlsMode, ip: str,
                               end: Callable[[], float] | None, first: BaseException
                               ) -> tuple[aiosmtplib.SMTP, TlsInfo | None]:
        """After a failed handshake: once more with TLS 1.0+ at security level 0, then
        (opportunistic only) plaintext, each on a fresh connection."""
        smtp = await self._reconnect(ip, end, "a permissive TLS retry")
        if not smtp.supports_extension("starttls") and tls_mode == "opportunistic":
            return smtp, None  # no longer offered: this connection is the plaintext one
        try:
            if smtp.supports_extension("starttls"):
                return smtp, await self._starttls(smtp, mx_name, self._legacy)
        except ReplyError as exc:
            if exc.command != "STARTTLS":
                smtp.close()
                raise
            first = exc
        except (ssl.SSLError, aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            first = exc
        except BaseException:
            smtp.close()  # the caller only knows the first connection
            raise
        smtp.close()
        if tls_mode != "opportunistic":
            raise RequirementError(f"TLS handshake with {mx_name} failed: {first}",
                                   lacks="tls", command="STARTTLS") from None
        # Postfix "may": plaintext after a failed handshake.
        return await self._reconnect(ip, end, "a plaintext retry"), None

    async def open(self, mx_name: str, ip: str, tls_mode: TlsMode = "opportunistic", *,
                   budget: float | None = None, time_left: Callable[[], float] | None = None) -> Session:
        """Open a session. No (re)connect starts, the TLS and certificate fallbacks included,
        that cannot finish within `budget` seconds of this call, or within `time_left()` (the
        caller's own clock): a transient host-level StageError instead."""
        if time_left is None and budget is not None:
            stop = time.monotonic() + budget
            time_left = lambda: stop - time.monotonic()  # noqa: E731
        end = time_left
        self._fits(end, "a connection", first=True)
        smtp = await self._connect(ip)
        tls: TlsInfo | None = None
        try:
            if smtp.supports_extension("starttls"):
                try:
                    tls = await self._starttls(smtp, mx_name, self._verify)
                except ReplyError as exc:
                    if exc.command != "STARTTLS":
                        raise  # EHLO refused after the handshake: a host failure
                    smtp.close()
                    if tls_mode != "opportunistic":
                        raise RequirementError(f"{mx_name} refused STARTTLS: {exc.code} {exc.text}",
                                               lacks="tls", command="STARTTLS") from None
                    # Postfix "may": plaintext. A fresh connection, not the refused one: after a
                    # 421 the server is gone, and a clean session costs one connect at most.
                    smtp = await self._reconnect(ip, end, "a plaintext retry")
                    tls = None
                except ssl.SSLCertVerificationError as exc:
                    smtp.close()
                    if tls_mode == "verify":
                        raise RequirementError(f"certificate of {mx_name} did not verify: {exc.verify_message}",
                                               lacks="certificate", command="STARTTLS") from None
                    smtp = await self._reconnect(ip, end, "an unverified TLS retry")
                    tls = await self._starttls(smtp, mx_name, self._any)
                except (ssl.SSLError, aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    smtp.close()
                    if tls_mode == "verify":
                        # No permissive retry: a verified delivery needs TLS 1.2+ and a valid name.
                        raise RequirementError(f"TLS handshake with {mx_name} failed: {exc}",
                                               lacks="tls", command="STARTTLS") from None
                    smtp, tls = await self._legacy_starttls(smtp, mx_name, tls_mode, ip, end, exc)
            if tls is None and tls_mode != "opportunistic":
                # "No plaintext, ever": RFC 3207 §4 leaves it to the client to refuse.
                raise RequirementError(f"{mx_name} does not offer STARTTLS and TLS is required",
                                       lacks="starttls", command="STARTTLS")
        except OutpostError:
            smtp.close()
            raise
        except _WIRE_ERRORS as exc:  # e.g. no reply to STARTTLS in time
            smtp.close()
            raise _smtp_error(exc, "STARTTLS") from exc
        except BaseException:
            smtp.close()
            raise
        return SmtpSession(smtp, mx_name, ip, tls, self.timeouts, pipelining=self.pipelining)


@dataclass
class SessionPool:
    """Idle sessions per (site, TLS mode), shared by the jobs of one batch; closed (QUIT) at
    the end of the batch. The site is the MX set (domain.site_of): domains on the same MX
    hosts share sessions."""

    idle: dict[tuple[str, str], list[Session]] = field(default_factory=dict)
    # Sessions the server closed while they were idle: still closed here at the end of the
    # batch, because closing a shaped one also releases its connection slot (shaping.py).
    dropped: list[Session] = field(default_factory=list)
    # The most domain deliveries (each holds at most one session at a time) in flight at once in
    # the batch, and the most sessions idle (issue 15 item 3): DeliveryService.DOMAINS_IN_FLIGHT.
    # Bounds the invocation's sockets whatever its jobs' recipients, where shaping bounds each site's.
    in_flight: int = 100
    _gate: asyncio.Semaphore | None = field(default=None, repr=False)

    async def bounded(self, work: Awaitable[T]) -> T:
        """Run `work` (one domain's delivery) once fewer than `in_flight` others are running."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.in_flight)
        try:
            await self._gate.acquire()
        except BaseException:
            if inspect.iscoroutine(work):
                work.close()  # cancelled while waiting: never started
            raise
        try:
            return await work
        finally:
            self._gate.release()

    def take(self, key: tuple[str, str]) -> Session | None:
        sessions = self.idle.get(key) or []
        while sessions:
            s = sessions.pop()
            if s.is_open:
                return s
            self.dropped.append(s)
        return None

    def give(self, key: tuple[str, str], s: Session) -> None:
        if s.is_open:
            self.idle.setdefault(key, []).append(s)
            # At most `in_flight` sessions idle (the oldest site's first to go beyond): with as
            # many in use, the batch never holds more than twice `in_flight` open. An evicted
            # session is closed with the dropped ones (the next take, or the end of the batch).
            while sum(len(group) for group in self.idle.values()) > self.in_flight:
                oldest = next(group for group in self.idle.values() if group)
                self.dropped.append(oldest.pop(0))
        else:
            self.dropped.append(s)

    async def close_dropped(self) -> None:
        """Close the sessions the server closed while idle, now rather than at the end of the
        batch: a shaped one frees its fleet slot and this container's count (shaping.py), which
        a job waiting for a turn (domain.DomainRun.turn) would otherwise wait on in vain."""
        dropped, self.dropped = self.dropped, []
        await asyncio.gather(*(s.close() for s in dropped), return_exceptions=True)

    async def close(self) -> None:
        sessions = [s for group in self.idle.values() for s in group] + self.dropped
        self.idle.clear()
        self.dropped = []
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
