"""The pipelined group's reply reader (delivery/pipelining.py): replies in order however the
bytes are split, multi-line replies kept whole, and the same bounds as aiosmtplib's reader."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib
import pytest

from outpost.delivery.pipelining import MAX_LINE, MAX_REPLY, _Replies, command_line


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: list[Exception | None] = []
        self.eof = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def eof_received(self) -> bool:
        self.eof += 1
        return False


def collector() -> tuple[_Replies, Inner]:
    async def make() -> _Replies:
        return _Replies(inner)
    inner = Inner()
    return asyncio.run(make()), inner


def test_replies_come_out_in_order_however_the_bytes_are_split() -> None:
    c, _ = collector()
    wire = (b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550-5.1.1 The account does not exist.\r\n"
            b"550 5.1.1 https://support.example/?p=NoSuchUser\r\n503 5.5.1 No valid recipients\r\n")
    for i in range(0, len(wire), 7):  # 7-byte pieces: lines and replies cut anywhere
        c.data_received(wire[i:i + 7])
    assert [(r.code, r.message) for r in c.replies] == [
        (250, "2.0.0 Ok"), (250, "2.1.0 Ok"),
        (550, "5.1.1 The account does not exist.\n5.1.1 https://support.example/?p=NoSuchUser"),
        (503, "5.5.1 No valid recipients")]
    assert c.failure is None and not c.buffer


def test_a_malformed_or_endless_reply_is_a_failure_not_a_hang() -> None:
    c, _ = collector()
    c.data_received(b"250 Ok\r\nhello there\r\n")
    assert [r.code for r in c.replies] == [250]
    assert isinstance(c.failure, aiosmtplib.SMTPResponseException)
    c, _ = collector()
    c.data_received(b"250" + b"x" * (MAX_LINE * 5))  # no line end: bounded all the same
    assert isinstance(c.failure, aiosmtplib.SMTPResponseException) and "too long" in c.failure.message


def test_the_connection_s_end_reaches_the_group_and_aiosmtplib() -> None:
    c, inner = collector()
    c.eof_received()
    assert isinstance(c.failure, aiosmtplib.SMTPServerDisconnected) and inner.eof == 1
    c.connection_lost(None)
    assert inner.lost == [None]


def test_a_command_line_refuses_control_characters() -> None:
    assert command_line(b"RCPT", b"TO:<a@b.test>", b"NOTIFY=FAILURE") == b"RCPT TO:<a@b.test> NOTIFY=FAILURE\r\n"
    with pytest.raises(ValueError):
        command_line(b"MAIL", b"FROM:<a@b.test>\r\nRCPT TO:<victim@c.test>")


def test_a_long_multi_line_reply_split_at_every_byte_is_read_in_linear_time() -> None:
    """A hostile MX trickling a 28 KB, 4,000-line reply a byte at a time: each byte used to
    re-parse every line already received (32 s of CPU on the event loop, measured); now each
    line is parsed once."""
    c, _ = collector()
    wire = b"250-a\r\n" * 4000 + b"250 z\r\n"
    start = time.process_time()
    for i in range(len(wire)):
        c.data_received(wire[i:i + 1])
    assert time.process_time() - start < 3.0  # about 0.1 s; 32 s before
    assert [r.code for r in c.replies] == [250] and c.replies[0].message.count("\n") == 4000


@pytest.mark.parametrize("line", [b"250-x\r\n", b"250-" + b"y" * 1000 + b"\n"], ids=["100k_lines", "10mb"])
def test_a_huge_multi_line_reply_fails_once_past_the_bound_and_keeps_nothing_more(line: bytes) -> None:
    """100,000 lines, or 10 MB with bare LFs, in 64 KiB reads: a failure as soon as the reply
    passes MAX_REPLY, no larger reply accepted for arriving in one read, and the bytes after
    the failure are not kept (memory stays bounded, no re-parse of a growing buffer)."""
    c, _ = collector()
    wire = line * (10_000_000 // len(line) if len(line) > 100 else 100_000)
    start = time.process_time()
    for i in range(0, len(wire), 65536):
        c.data_received(wire[i:i + 65536])
    assert time.process_time() - start < 3.0
    assert not c.replies and isinstance(c.failure, aiosmtplib.SMTPResponseException)
    assert len(c.buffer) <= 2 * 65536 + MAX_REPLY
