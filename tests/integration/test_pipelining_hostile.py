"""A hostile MX against the pipelined client (review of issue 15 item 3): real sockets on
127.0.0.x, a scripted server that breaks the dialogue on purpose. Nothing may count as delivered
unless a 2xx came after the end of data, and a dot that never left must not be reported as
"the server may have the message" (RFC 1047's window, counted and retried as a possible
duplicate)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from outpost.delivery.transport import SmtpConnector, Timeouts
from outpost.errors import ReplyError, StageError

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.14.7"
BODY = b"From: a@sender.test\r\nTo: b@hostile.test\r\nSubject: hi\r\n\r\nHello.\r\n"
EHLO = b"250-mx.hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


class Conn:
    """The server's side of one connection: read lines, write raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.seen = sock, b"", []

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        self.seen.append(line.rstrip(b"\r"))
        return line.rstrip(b"\r")

    def until_dot(self) -> None:
        while self.line() != b".":
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


@contextmanager
def hostile_mx(script: Callable[[Conn], None]) -> Iterator[tuple[int, list[Conn]]]:
    """One scripted connection at a time; the greeting and EHLO are answered before `script`."""
    srv = socket.create_server((HOST, 0))
    srv.settimeout(0.2)
    conns: list[Conn] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = srv.accept()
            except TimeoutError:
                continue
            c = Conn(sock)
            conns.append(c)
            try:
                c.send(b"220 mx.hostile.test ESMTP\r\n")
                c.line()
                c.send(EHLO)
                script(c)
                while c.line():  # drain until the client hangs up
                    pass
            except (EOFError, OSError):
                pass
            finally:
                sock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], conns
    finally:
        stop.set()
        t.join(5)
        srv.close()


def send_one(port: int, body: bytes = BODY, *, pipelining: bool = True) -> object:
    """One transaction (pipelined unless told otherwise): the reply, or the exception it raised."""
    async def run() -> object:
        c = SmtpConnector("mta.sender.test", port=port, pipelining=pipelining,
                          timeouts=Timeouts(command=5, end_of_data=10, end_of_data_min=5))
        s = await c.open("mx.hostile.test", HOST, "opportunistic")
        assert s.supports("pipelining")
        try:
            return await s.send("bounce@sender.test", "b@hostile.test", body)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc
        finally:
            await s.close()
    return asyncio.run(run())


def test_a_250_sent_with_the_group_before_the_content_is_not_a_delivery() -> None:
    """The server answers MAIL, RCPT, DATA and, in the same write, the end of data it has not
    seen; the real answer to the dot would be 554. The extra reply closes the session (RFC 2920:
    one reply per command) before any content: the dot never leaves, so the failure is a plain
    transient one, not "no reply to the end of data" (after_dot)."""
    def script(c: Conn) -> None:
        c.line(), c.line(), c.line()  # MAIL, RCPT, DATA
        c.send(b"250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 queued early\r\n")
        c.until_dot()
        c.send(b"554 5.7.1 refused\r\n")

    with hostile_mx(script) as (port, conns):
        out = send_one(port)
    assert isinstance(out, StageError), out
    assert not out.after_dot  # the dot was not sent: no possible duplicate to count
    assert b"." not in conns[0].seen


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
def test_a_250_that_arrives_during_the_content_is_not_the_end_of_data_reply(pipelining: bool) -> None:
    """The group is answered properly; a 250 arrives while the content is still being written
    (before the dot), and the server's answer to the dot is 554. The early 250 is not the
    end-of-data reply: the message is not recorded delivered."""
    big = BODY + (b"y" * 998 + b"\r\n") * 4000  # 4 MB: still being written when the 250 comes

    def script(c: Conn) -> None:
        for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):  # MAIL, RCPT, DATA
            c.line()
            if not pipelining:
                c.send(reply)
        if pipelining:
            c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        c.line()  # the first line of content
        c.send(b"250 2.0.0 queued before the dot\r\n")
        c.until_dot()
        c.send(b"554 5.7.1 refused after the dot\r\n")

    with hostile_mx(script) as (port, _):
        out = send_one(port, big, pipelining=pipelining)
    assert not (hasattr(out, "code") and 200 <= out.code < 300), out  # type: ignore[attr-defined]
    assert isinstance(out, (ReplyError, StageError)), out


def test_a_reply_sent_before_any_command_never_answers_the_end_of_data() -> None:
    """An unsolicited 250 right after the EHLO reply (before MAIL was sent): whatever it
    pairs with, it must not stand for the end-of-data reply when the dot is answered 554."""
    def script(c: Conn) -> None:
        c.send(b"250 2.0.0 unsolicited\r\n")
        c.line(), c.line(), c.line()
        c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        c.until_dot()
        c.send(b"554 5.7.1 refused after the dot\r\n")

    with hostile_mx(script) as (port, _):
        out = send_one(port)
    assert isinstance(out, (ReplyError, StageError)), out


def test_a_server_that_hangs_up_mid_group_is_a_failure_before_the_dot() -> None:
    def script(c: Conn) -> None:
        c.line(), c.line(), c.line()
        c.send(b"250 ok\r\n25")
        raise EOFError  # the connection closes half-way through the RCPT reply

    with hostile_mx(script) as (port, _):
        out = send_one(port)
    assert isinstance(out, StageError) and out.command == "RCPT" and not out.after_dot, out


def test_a_server_answering_one_by_one_slowly_still_delivers() -> None:
    """PIPELINING advertised, each reply a second apart: each within its own command timeout."""

    def script(c: Conn) -> None:
        c.line(), c.line(), c.line()
        for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
            time.sleep(1.0)
            c.send(reply)
        c.until_dot()
        c.send(b"250 2.0.0 queued as ABC\r\n")

    with hostile_mx(script) as (port, _):
        out = send_one(port)
    assert getattr(out, "code", None) == 250, out


@pytest.mark.parametrize("after_dot", ["hang_up", "garbage"])
def test_a_refused_rcpt_stays_the_outcome_when_the_lone_dot_goes_unanswered(after_dot: str) -> None:
    """RCPT refused 550 yet DATA accepted (354): the client ends the empty message with a lone
    dot (RFC 2920 §3.1). A server that then hangs up or answers garbage must not turn the 550
    into a transient failure (retried for days instead of bounced)."""
    def script(c: Conn) -> None:
        c.line(), c.line(), c.line()
        c.send(b"250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
        assert c.line() == b"."
        if after_dot == "hang_up":
            raise EOFError
        c.send(b"garbage\r\n")

    with hostile_mx(script) as (port, _):
        out = send_one(port)
    assert isinstance(out, ReplyError) and (out.code, out.command) == (550, "RCPT"), out


@pytest.mark.parametrize("wire", [b"250-x\r\n" * 100_000, b"250-" + b"y" * 1000 + b"\n"],
                         ids=["100k_lines", "10mb_bare_lf"])
def test_an_endless_multi_line_reply_fails_fast_and_bounded(wire: bytes) -> None:
    """100,000 continuation lines, or 10 MB of 1 KB lines with bare LFs, as the MAIL reply: a
    transient failure before the dot within seconds, never a delivery."""

    def script(c: Conn) -> None:
        c.line(), c.line(), c.line()
        data = wire if len(wire) > 10_000 else wire * 10_000
        try:
            c.send(data)
        except OSError:
            pass  # the client hung up once the reply was too long

    with hostile_mx(script) as (port, _):
        start = time.monotonic()
        out = send_one(port)
        took = time.monotonic() - start
    assert isinstance(out, StageError) and out.command == "MAIL" and not out.after_dot, out
    assert took < 10, took
