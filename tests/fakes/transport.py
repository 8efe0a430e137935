"""An in-memory SMTP transport for unit tests: a scriptable peer per MX address behind the
transport's `Connector` / `Session` protocols (outpost.delivery.transport), no sockets.

A `Peer` answers each command (CONNECT, EHLO, STARTTLS, RSET, MAIL, RCPT, DATA, EOD: the reply
to the final dot) with its scripted reply, or the usual positive one; it can drop the
connection instead of answering a command, or take a while to answer (a delay longer than the
connector's timeout for that command is a timeout). Like the real transport, the fake raises
Outpost's facts (errors.py), never verdicts, and closes the session after a 421 or a drop.

    peers = {"192.0.2.1": Peer(replies={"RCPT": (421, "4.3.2 Busy")}), "192.0.2.2": Peer()}
    connector = FakeConnector(peers)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

from outpost.delivery.transport import Connector, Timeouts, TlsInfo, TlsMode
from outpost.delivery.trouble import SmtpReply
from outpost.errors import (
    NoTimeLeftError,
    ReplyError,
    RequirementError,
    SlowPeerError,
    StageError,
    StaleSessionError,
)

_POSITIVE = {"CONNECT": (220, "fake ESMTP"), "EHLO": (250, "fake"), "STARTTLS": (220, "2.0.0 Ready"),
             "RSET": (250, "2.0.0 Ok"), "MAIL": (250, "2.1.0 Ok"), "RCPT": (250, "2.1.5 Ok"),
             "DATA": (354, "End data with <CR><LF>.<CR><LF>"), "EOD": (250, "2.0.0 Ok: queued as FAKE1")}


@dataclass
class Delivered:
    sender: str
    rcpt: str
    data: bytes
    mx_name: str


@dataclass
class Peer:
    """One scripted MX address. `replies[cmd]`: one (code, text) for every time, or a list
    used in turn (then the positive default). `drop_at`: commands answered by closing the
    connection. `delays[cmd]`: seconds before the answer."""

    replies: dict[str, tuple[int, str] | list[tuple[int, str]]] = field(default_factory=dict)
    drop_at: set[str] = field(default_factory=set)
    delays: dict[str, float] = field(default_factory=dict)
    extensions: set[str] = field(default_factory=lambda: {"size", "8bitmime", "smtputf8", "dsn", "starttls"})
    size_limit: int | None = None
    tls: TlsInfo | None = field(default_factory=lambda: TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", True))
    log: list[str] = field(default_factory=list)  # "CMD code" per command seen
    accepted: list[Delivered] = field(default_factory=list)

    def reply_to(self, command: str) -> tuple[int, str]:
        scripted = self.replies.get(command)
        if isinstance(scripted, list):
            return scripted.pop(0) if scripted else _POSITIVE[command]
        return scripted or _POSITIVE[command]


class FakeSession:
    """A `Session` with a Peer."""

    def __init__(self, peer: Peer, mx_name: str, ip: str, timeouts: Timeouts,
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.peer, self.mx_name, self.ip, self.timeouts, self._sleep = peer, mx_name, ip, timeouts, sleep
        self.tls = peer.tls
        self.transactions = 0
        self._open = True
        self.quit_sent = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def _step(self, command: str, *, after_dot: bool = False) -> tuple[int, str]:
        """One command's answer, or the fact that it failed (and the session closed)."""
        if not self._open:
            raise StageError(command, aiosmtplib.SMTPServerDisconnected("connection lost"), after_dot=after_dot)
        limit = {"CONNECT": self.timeouts.connect, "EOD": self.timeouts.end_of_data}.get(command,
                                                                                           self.timeouts.command)
        delay = self.peer.delays.get(command, 0.0)
        if delay:
            await self._sleep(min(delay, limit))
            if delay > limit:
                self._open = False
                self.peer.log.append(f"{command} timeout")
                raise StageError(command, aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"),
                                 after_dot=after_dot)
        if command in self.peer.drop_at:
            self._open = False
            self.peer.log.append(f"{command} dropped")
            raise StageError(command, aiosmtplib.SMTPServerDisconnected("Connection lost"), after_dot=after_dot)
        code, text = self.peer.reply_to(command)
        self.peer.log.append(f"{command} {code}")
        if code == 421:
            self._open = False  # RFC 5321 §3.8: the server closes after a 421
        return code, text

    async def reset(self) -> None:
        try:
            code, _ = await self._step("RSET")
        except StageError as exc:
            raise StaleSessionError(f"RSET on a reused connection to {self.mx_name} failed: {exc}") from None
        if code // 100 != 2:
            self._open = False
            raise StaleSessionError(f"RSET on a reused connection to {self.mx_name} failed: {code}")

    async def send(self, sender: str, rcpt: str, data: bytes | Sequence[bytes], *, envid: str | None = None,
                   utf8: bool = False, time_left: Callable[[], float] | None = None,
                   dot_within: float | None = None) -> SmtpReply:
        parts = (data,) if isinstance(data, bytes) else tuple(data)
        content = b"".join(parts)
        used = 0.0  # the peer's delays so far in this transaction, before the dot

        async def before_dot(command: str) -> None:
            """As the transport does: a reply that would come after what is left of
            `dot_within` (and within the command timeout) abandons the transaction."""
            nonlocal used
            delay = self.peer.delays.get(command, 0.0)
            if dot_within is not None and delay >= dot_within - used and dot_within - used < self.timeouts.command:
                await self._sleep(max(0.0, dot_within - used))
                self._open = False
                self.peer.log.append(f"{command} abandoned")
                raise SlowPeerError(command, dot_within)
            used += delay

        if self.transactions:
            await before_dot("RSET")
            await self.reset()
        if self.peer.size_limit is not None and len(content) > self.peer.size_limit:
            raise RequirementError(f"message of {len(content)} bytes exceeds the server's SIZE "
                                   f"{self.peer.size_limit}", lacks="size", command="MAIL",
                                   limit=self.peer.size_limit)
        if utf8 and "smtputf8" not in self.peer.extensions:
            raise RequirementError("the address needs SMTPUTF8, which the server does not offer",
                                   lacks="smtputf8", command="MAIL")
        for command in ("MAIL", "RCPT", "DATA"):
            await before_dot(command)
            code, text = await self._step(command)
            expected = 3 if command == "DATA" else 2
            if code // 100 != expected:
                self.transactions += 1
                raise ReplyError(code, text, command)
        t = self.timeouts
        wait = t.end_of_data if time_left is None else max(0.0, min(time_left(), t.end_of_data))
        if wait < min(t.end_of_data, t.end_of_data_min):
            self._open = False
            raise NoTimeLeftError(f"{wait:.0f} s left to wait for the end-of-data reply; not sending the dot", "EOD")
        code, text = await self._step("EOD", after_dot=True)
        self.transactions += 1
        if code // 100 != 2:
            raise ReplyError(code, text, "EOD")
        self.peer.accepted.append(Delivered(sender, rcpt, content, self.mx_name))
        return SmtpReply(code, text, "EOD")

    async def close(self) -> None:
        if self._open:
            self.quit_sent = True
            self.peer.log.append("QUIT 221")
        self._open = False


class FakeConnector:
    """A `Connector` over scripted peers, one per address; an address without a peer refuses
    the connection. `opened` lists every session opened, in order."""

    def __init__(self, peers: dict[str, Peer], *, timeouts: Timeouts | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.peers = peers
        self.timeouts = timeouts or Timeouts()
        self.sleep = sleep
        self.opened: list[FakeSession] = []

    async def open(self, mx_name: str, ip: str, tls_mode: TlsMode = "opportunistic", *,
                   budget: float | None = None, time_left: Callable[[], float] | None = None) -> FakeSession:
        peer = self.peers.get(ip)
        if peer is None:
            raise StageError("CONNECT", ConnectionRefusedError(f"connection to {ip} refused"))
        session = FakeSession(peer, mx_name, ip, self.timeouts, self.sleep)
        for command in ("CONNECT", "EHLO"):
            code, text = await session._step(command)
            if code // 100 != 2:
                session._open = False
                raise ReplyError(code, text, command)
        if "starttls" not in peer.extensions or peer.tls is None:
            session.tls = None
            if tls_mode != "opportunistic":
                session._open = False
                raise RequirementError(f"{mx_name} does not offer STARTTLS and TLS is required",
                                       lacks="starttls", command="STARTTLS")
        elif tls_mode == "verify" and not peer.tls.verified:
            session._open = False
            raise RequirementError(f"certificate of {mx_name} did not verify", lacks="certificate",
                                   command="STARTTLS")
        self.opened.append(session)
        return session


def _conforms(connector: FakeConnector) -> Connector:
    return connector  # mypy checks that the fake is a Connector (and its sessions Sessions)


def deliver_one_domain(service: object, n: int, data: tuple[bytes, ...], *,
                       handoff: set[int] | None = None) -> list[tuple[int, object]]:
    """Run `service`'s per-domain step for recipients u0..u<n-1>@example.test (message m1) and
    return what it recorded, in order: (recipient index, result)."""
    import time

    from outpost.delivery.service import _Rcpt
    from outpost.delivery.transport import SessionPool

    results: list[tuple[int, object]] = []

    async def record(rc: _Rcpt, res: object) -> None:
        results.append((rc.index, res))

    rcpts = [_Rcpt(i, f"u{i}@example.test", f"u{i}@example.test", "example.test", 0, False) for i in range(n)]

    async def run() -> None:
        pool = SessionPool()
        try:
            await service._deliver_domain("m1", "example.test", rcpts, data, "opportunistic",  # type: ignore[attr-defined]
                                          pool, time.time() + 300, record, handoff=handoff)
        finally:
            await pool.close()

    asyncio.run(run())
    return results
