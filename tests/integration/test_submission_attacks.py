"""A hostile client against the submission server (an attacker's review, issue 13): raw
sockets on loopback with real TLS (the test CA). SMTP smuggling with bare CR / LF (SEC Consult
2023, CVE-2023-51766), plaintext pipelined behind STARTTLS (CVE-2011-0411 family), oversized
AUTH blobs. The service behind the server is a fake that runs the real raw-message check
(raw_message.inspect_raw) and records what it would store."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from outpost.api.auth import Principal
from outpost.errors import UnauthorizedError
from outpost.raw_message import inspect_raw
from outpost.submission.server import SubmissionServer
from outpost.submission.settings import SubmissionSettings
from outpost_local.pki import TestPki

pytestmark = pytest.mark.timeout(120)
HOST = "127.0.0.1"
GOOD = "op_good"
HEAD = b"From: a@shop.test\r\nTo: r@ok.test\r\nSubject: hi\r\n\r\n"


class Keys:
    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        if authorization != f"Bearer {GOOD}":
            raise UnauthorizedError("invalid", field="Authorization")
        return Principal("k1", "test", frozenset({"send"}))


class Sender:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def send_raw(self, data: bytes, *, rcpts: list[str], principal: Principal,
                 context: Any = None) -> tuple[dict, bool]:
        inspect_raw(data)
        self.got.append(data)
        return {"id": "01" + "a" * 24}, False


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def rig(pki: TestPki) -> Iterator[tuple[SubmissionServer, Sender]]:
    sender = Sender()
    settings = SubmissionSettings(host=HOST, starttls_port=0, tls_port=0, hostname="smtp.test",
                                  idle_timeout=30.0, session_timeout=60.0)
    server = SubmissionServer(settings, sender=sender, keys=Keys(), tls_context=pki.server_context(HOST))
    server.start_in_thread()
    yield server, sender
    server.stop()


class Wire:
    """One connection read reply by reply (multi-line replies joined)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def reply(self) -> bytes:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; so far {lines!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\n".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()


def _tls(server: SubmissionServer, pki: TestPki) -> Wire:
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    raw = socket.create_connection((HOST, server.ports["tls"]), timeout=30)
    w = Wire(ctx.wrap_socket(raw, server_hostname=HOST))
    assert w.reply().startswith(b"220")
    assert w.cmd(b"EHLO attacker.test").startswith(b"250")
    auth = base64.b64encode(b"\0u\0" + GOOD.encode())
    assert w.cmd(b"AUTH PLAIN " + auth).startswith(b"235"), "AUTH"
    return w


SMUGGLED = b"MAIL FROM:<ceo@shop.test>\r\nRCPT TO:<victim@ok.test>\r\nDATA\r\n" \
           b"From: ceo@shop.test\r\nTo: victim@ok.test\r\nSubject: smuggled\r\n\r\npay now\r\n"


@pytest.mark.parametrize("end", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"],
                         ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CRLF.CR"])
def test_smuggling_endings_neither_end_data_nor_get_stored(rig: Any, pki: TestPki, end: bytes) -> None:
    server, sender = rig
    w = _tls(server, pki)
    assert w.cmd(b"MAIL FROM:<a@shop.test>").startswith(b"250")
    assert w.cmd(b"RCPT TO:<r@ok.test>").startswith(b"250")
    assert w.cmd(b"DATA").startswith(b"354")
    w.sock.sendall(HEAD + b"first\r\n" + end + SMUGGLED + b".\r\n")
    # One reply for the whole DATA (it ended only at CRLF.CRLF): the refusal, not a 250 then
    # replies to the smuggled MAIL / RCPT / DATA.
    assert w.reply() == b"550 5.5.2 Bare CR or LF in the message: lines must end with CRLF"
    assert w.cmd(b"NOOP") == b"250 2.0.0 OK"  # the session is in step: nothing else was run
    assert sender.got == []
    w.sock.close()


def test_a_bare_cr_in_a_header_cannot_add_a_from_after_the_checks(rig: Any, pki: TestPki) -> None:
    """The transport writes any line end as CRLF, so 'Subject: x<CR>From: ...' would reach the
    MX as a second From field that raw_message never saw."""
    server, sender = rig
    w = _tls(server, pki)
    w.cmd(b"MAIL FROM:<a@shop.test>")
    w.cmd(b"RCPT TO:<r@ok.test>")
    assert w.cmd(b"DATA").startswith(b"354")
    w.sock.sendall(b"Subject: hi\rFrom: ceo@evil.test\r\nFrom: a@shop.test\r\n\r\nbody\r\n.\r\n")
    assert w.reply().startswith(b"550 5.5.2 ")
    assert sender.got == []
    w.sock.close()


def test_crlf_only_messages_with_dot_lines_still_pass(rig: Any, pki: TestPki) -> None:
    server, sender = rig
    w = _tls(server, pki)
    w.cmd(b"MAIL FROM:<a@shop.test>")
    w.cmd(b"RCPT TO:<r@ok.test>")
    assert w.cmd(b"DATA").startswith(b"354")
    w.sock.sendall(HEAD + b"one\r\n..\r\n..x\r\n.\r\n")
    assert w.reply().startswith(b"250 2.0.0 OK: queued as ")
    assert sender.got == [HEAD + b"one\r\n.\r\n.x\r\n"]  # dot-stuffing undone, nothing more
    w.sock.close()


def test_plaintext_pipelined_after_starttls_is_discarded(rig: Any, pki: TestPki) -> None:
    """CVE-2011-0411 family (aiosmtpd: CVE-2024-34083, fixed in 1.4.6): commands sent in
    plaintext in the same packet as STARTTLS must not run inside the TLS session."""
    server, _ = rig
    raw = socket.create_connection((HOST, server.ports["starttls"]), timeout=30)
    w = Wire(raw)
    assert w.reply().startswith(b"220")
    assert w.cmd(b"EHLO attacker.test").startswith(b"250")
    raw.sendall(b"STARTTLS\r\nEHLO injected.test\r\nNOOP injected\r\n")
    assert w.reply().startswith(b"220")
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    try:
        tls = ctx.wrap_socket(raw, server_hostname=HOST)
    except (ssl.SSLError, OSError):
        return  # the server dropped the connection: also safe
    t = Wire(tls)
    t.sock.settimeout(3)
    # The first thing the TLS session answers is our own command, not the injected EHLO.
    assert t.cmd(b"NOOP") == b"250 2.0.0 OK"
    with pytest.raises((TimeoutError, socket.timeout)):
        t.sock.recv(1)  # and nothing else is pending
    tls.close()


def test_starttls_twice_is_refused(rig: Any, pki: TestPki) -> None:
    server, _ = rig
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    raw = socket.create_connection((HOST, server.ports["starttls"]), timeout=30)
    w = Wire(raw)
    w.reply()
    w.cmd(b"EHLO a.test")
    assert w.cmd(b"STARTTLS").startswith(b"220")
    t = Wire(ctx.wrap_socket(raw, server_hostname=HOST))
    t.cmd(b"EHLO a.test")
    second = t.cmd(b"STARTTLS")
    assert second[:1] == b"5", second
    assert t.cmd(b"NOOP") == b"250 2.0.0 OK"
    t.sock.close()


@pytest.mark.parametrize("size", [4096, 1 << 20])
def test_a_huge_auth_blob_is_refused_quickly(rig: Any, pki: TestPki, size: int) -> None:
    server, _ = rig
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    w = Wire(ctx.wrap_socket(socket.create_connection((HOST, server.ports["tls"]), timeout=30),
                             server_hostname=HOST))
    w.reply()
    w.cmd(b"EHLO a.test")
    blob = base64.b64encode(b"\0u\0" + b"k" * size)
    started = time.monotonic()
    inline = w.cmd(b"AUTH PLAIN " + blob)
    assert inline[:3] == b"500", inline  # command line too long
    try:
        assert w.cmd(b"AUTH PLAIN")[:3] == b"334"
        challenged = w.cmd(blob)  # the same blob as the challenge's answer
    except ConnectionError:
        challenged = b"closed"
    assert not challenged.startswith(b"235"), challenged
    assert time.monotonic() - started < 20
    w.sock.close()


@pytest.mark.parametrize("blob", [b"\0\0\0" + GOOD.encode(), b"\0u\0" + GOOD.encode() + b"\0x",
                                  "\0\u00fc\0\u00e9t\u00e9".encode(), b"\0u\0op_go\xffod"])
def test_auth_plain_with_nuls_and_unicode_never_authenticates(rig: Any, pki: TestPki, blob: bytes) -> None:
    server, _ = rig
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    w = Wire(ctx.wrap_socket(socket.create_connection((HOST, server.ports["tls"]), timeout=30),
                             server_hostname=HOST))
    w.reply()
    w.cmd(b"EHLO a.test")
    got = w.cmd(b"AUTH PLAIN " + base64.b64encode(blob))
    assert got[:3] in (b"501", b"535"), got
    assert w.cmd(b"MAIL FROM:<a@shop.test>")[:3] == b"530"
    w.sock.close()


def test_auth_login_interrupted_then_mail_is_refused(rig: Any, pki: TestPki) -> None:
    server, _ = rig
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    w = Wire(ctx.wrap_socket(socket.create_connection((HOST, server.ports["tls"]), timeout=30),
                             server_hostname=HOST))
    w.reply()
    w.cmd(b"EHLO a.test")
    assert w.cmd(b"AUTH LOGIN")[:3] == b"334"
    assert w.cmd(b"*")[:3] == b"501"  # RFC 4954 §4: the client cancels
    assert w.cmd(b"MAIL FROM:<a@shop.test>")[:3] == b"530"
    w.sock.close()


@pytest.mark.parametrize("size", [1 << 16, 1 << 20])
def test_an_oversized_auth_answer_is_500_5_5_6_and_leaks_nothing(rig: Any, pki: TestPki, size: int,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """RFC 4954 §6's reply; before: aiosmtpd's '500 Error: (ValueError) Separator is not
    found...' and a logged traceback per attempt (log flooding before any AUTH)."""
    server, _ = rig
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    w = Wire(ctx.wrap_socket(socket.create_connection((HOST, server.ports["tls"]), timeout=30),
                             server_hostname=HOST))
    w.reply()
    w.cmd(b"EHLO a.test")
    for mechanism in (b"AUTH LOGIN", b"AUTH PLAIN"):
        assert w.cmd(mechanism)[:3] == b"334"
        assert w.cmd(base64.b64encode(b"u" * size)) == b"500 5.5.6 Authentication exchange line is too long"
        assert w.cmd(b"NOOP") == b"250 2.0.0 OK"  # in step: the rest of the line was not run
    assert w.cmd(b"MAIL FROM:<a@shop.test>")[:3] == b"530"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    w.sock.close()


class TwoKeys(Keys):
    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        if authorization not in (f"Bearer {GOOD}", "Bearer op_other"):
            raise UnauthorizedError("invalid", field="Authorization")
        return Principal(str(authorization)[-5:], "test", frozenset({"send"}))


def test_one_keys_slow_datas_cannot_take_the_whole_budget(pki: TestPki) -> None:
    """Measured before: 10 connections of one key, DATA without SIZE (40 MB reserved each) and
    a byte now and then, held the process's 400 MB for up to session_timeout; every other
    client got 451 4.3.2. Now one key holds data_budget_share of it at most."""
    mb = 1024 * 1024
    settings = SubmissionSettings(host=HOST, starttls_port=0, tls_port=0, hostname="smtp.test",
                                  max_message_bytes=mb, data_budget=4 * mb, data_budget_share=0.5)
    server = SubmissionServer(settings, sender=Sender(), keys=TwoKeys(), tls_context=pki.server_context(HOST))
    server.start_in_thread()
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    opened = []

    def data(key: str) -> bytes:
        w = Wire(ctx.wrap_socket(socket.create_connection((HOST, server.ports["tls"]), timeout=30),
                                 server_hostname=HOST))
        w.reply()
        w.cmd(b"EHLO a.test")
        assert w.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0u\0" + key.encode()))[:3] == b"235"
        w.cmd(b"MAIL FROM:<a@shop.test>")
        w.cmd(b"RCPT TO:<r@ok.test>")
        opened.append(w)
        return w.cmd(b"DATA")

    try:
        assert [data(GOOD)[:3] for _ in range(3)] == [b"354", b"354", b"451"]  # 2 MB: its half
        assert [data("op_other")[:3] for _ in range(2)] == [b"354", b"354"]  # the other key still sends
        opened[0].sock.sendall(HEAD + b"x\r\n.\r\n")
        assert opened[0].reply().startswith(b"250 ")
        assert data(GOOD)[:3] == b"354"  # a finished DATA gives its share back
    finally:
        for w in opened:
            w.sock.close()
        server.stop()


@pytest.mark.parametrize("content", [HEAD.replace(b"Subject: hi\r\n", b"no colon here\r\n") + b"x\r\n",
                                     HEAD + b"y" * 1200 + b"\r\n",
                                     "From: \u00e9l\u00e8ve@shop.test\r\nFrom: b@shop.test\r\n\r\nx\r\n".encode()])
def test_every_refusal_of_a_message_is_ascii(rig: Any, pki: TestPki, content: bytes) -> None:
    """RFC 5321 §4.2: replies are ASCII; the error texts cite 'RFC 5322 §2.2' and may hold a
    client's UTF-8. Before: '500 5.5.2 Line too long (RFC 5321 \\xc2\\xa74.5.3.1.6)'."""
    server, sender = rig
    w = _tls(server, pki)
    w.cmd(b"MAIL FROM:<a@shop.test>")
    w.cmd(b"RCPT TO:<r@ok.test>")
    assert w.cmd(b"DATA").startswith(b"354")
    w.sock.sendall(content + b".\r\n")
    reply = w.reply()
    assert reply[:1] == b"5" and reply.isascii(), reply
    assert sender.got == []
    w.sock.close()
