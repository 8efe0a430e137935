"""SMTP PIPELINING (RFC 2920) on an aiosmtplib connection: one write, the replies in order.

aiosmtplib 5.1.3 has no pipelining: its protocol (SMTPProtocol) parses one reply per command
and drops what arrives while no command waits, or while a parsed reply has not been picked up
yet (`data_received`), so a second reply that arrives on its own would be lost. Rather than
subclass its protocol (SMTP._create_connection builds it itself), a command group swaps in a
`_Replies` collector with asyncio's public `Transport.set_protocol()` for as long as the group's
replies are read, then gives the transport back to aiosmtplib's protocol: the collector keeps
every byte, parses the replies in order (bounded like aiosmtplib's: 8 KiB a line, 32 KiB a
reply) and passes the connection's loss or EOF on to aiosmtplib's protocol, so the session's
state stays right. The command lock (SMTPProtocol._command_lock) is held meanwhile, so no other
command can interleave. Works the same below TLS (the SSL transport supports set_protocol).

The group is what RFC 2920 §3.1 allows: RSET, MAIL and RCPT anywhere, DATA last. The caller
reads every reply (§3.1: "MUST check ALL statuses"), each within its own timeout: a server that
stalls mid-group costs one command timeout, as a serial dialogue does.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib import SMTPStatus

__all__ = ["PipelinedGroup", "command_line"]

MAX_LINE = 8192  # aiosmtplib's MAX_LINE_LENGTH
MAX_REPLY = MAX_LINE * 4  # aiosmtplib's MAX_RESPONSE_LENGTH: a reply with its continuations
_INJECTION = re.compile(rb"[\x00-\x1f\x7f]")  # aiosmtplib's COMMAND_INJECTION_REGEX


def command_line(verb: bytes, *args: bytes) -> bytes:
    """One command line, refused (ValueError, as aiosmtplib does) when an argument carries a
    control character: CR or LF would inject a command of its own."""
    for arg in args:
        if _INJECTION.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join((verb, *args)) + b"\r\n"


class _Replies(asyncio.Protocol):
    """Stands in for aiosmtplib's protocol while a group's replies are read: every byte kept,
    the replies parsed in order; the connection's loss and EOF passed on to `inner`."""

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self.buffer = bytearray()
        self.replies: list[aiosmtplib.SMTPResponse] = []
        self.failure: BaseException | None = None
        self.changed = asyncio.Event()
        self._lines: list[bytes] = []  # the complete lines of the reply still arriving
        self._offset = 0  # where they end in `buffer`

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return  # the group is over (the session will be closed): nothing more is kept
        self.buffer.extend(data)
        try:
            while (reply := self._parse()) is not None:
                self.replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self.failure = exc
        self.changed.set()

    def _parse(self) -> aiosmtplib.SMTPResponse | None:
        """The first complete reply in the buffer (removed from it), or None. The lines of a
        reply still arriving are kept (`_lines`, `_offset`), so every byte is scanned once
        however the reply is split, and the reply is bounded as a whole (MAX_REPLY)."""
        while (end := self.buffer.find(b"\n", self._offset)) >= 0:
            line = bytes(self.buffer[self._offset:end + 1])
            if len(line) > MAX_LINE or end + 1 > MAX_REPLY:
                raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response,
                    f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}") from None
            self._offset = end + 1
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                lines, self._lines = self._lines, []
                del self.buffer[:self._offset]
                self._offset = 0
                return aiosmtplib.SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
        if len(self.buffer) > MAX_REPLY or len(self.buffer) - self._offset > MAX_LINE:
            raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
        return None

    def eof_received(self) -> bool | None:
        self.failure = self.failure or aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
        self.changed.set()
        return self.inner.eof_received() if isinstance(self.inner, asyncio.Protocol) else False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.failure is None:
            self.failure = aiosmtplib.SMTPServerDisconnected("Connection lost")
            self.failure.__cause__ = exc
        self.changed.set()
        self.inner.connection_lost(exc)

    # Flow control stays aiosmtplib's (its drain waits on these).
    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class PipelinedGroup:
    """`async with PipelinedGroup(smtp, lines) as group:` writes the command lines in one write;
    `await group.reply(timeout)` returns their replies in order. On leaving, the transport goes
    back to aiosmtplib's protocol. SMTPServerDisconnected / SMTPReadTimeoutError /
    SMTPResponseException (a malformed reply) as aiosmtplib raises them."""

    def __init__(self, smtp: aiosmtplib.SMTP, lines: Sequence[bytes]) -> None:
        self.smtp, self.lines = smtp, lines
        self._collector: _Replies | None = None
        self._lock: asyncio.Lock | None = None
        self._taken = 0

    async def __aenter__(self) -> PipelinedGroup:
        proto = self.smtp.protocol
        if proto is None or proto.transport is None or proto._command_lock is None or not proto.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._lock = proto._command_lock
        await self._lock.acquire()
        transport = proto.transport
        if transport is None or transport.is_closing():  # lost while waiting for the lock
            self._lock.release()
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._collector = _Replies(proto)
        transport.set_protocol(self._collector)
        try:
            proto.write(b"".join(self.lines))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def reply(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply of the group, within `timeout` seconds."""
        c = self._collector
        assert c is not None, "reply() outside the group"
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(c.replies) <= self._taken:
            if c.failure is not None:
                raise c.failure
            c.changed.clear()
            left = end - loop.time()
            if left <= 0:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            try:
                await asyncio.wait_for(c.changed.wait(), left)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        self._taken += 1
        return c.replies[self._taken - 1]

    async def __aexit__(self, *exc: object) -> None:
        proto, c = self.smtp.protocol, self._collector
        self._collector = None
        if proto is not None and c is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.set_protocol(proto)
            if c.buffer or len(c.replies) > self._taken:
                # Bytes nobody asked for (RFC 2920: one reply per command): the session's state
                # is unknown, so it is closed rather than mis-pair a later reply.
                proto.transport.close()
        if self._lock is not None and self._lock.locked():
            self._lock.release()
        self._lock = None
