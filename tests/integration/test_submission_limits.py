"""The submission server's bounds, on loopback with real TLS (the test CA) and short limits:
idle and whole-session timeouts, connections per address, RCPTs per transaction, line
lengths, and the replies to a throttled key and a failing store. The service behind it is a
small fake here (the local stack's real one is in test_submission.py): these are the
server's own rules."""

from __future__ import annotations

import select
import smtplib
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from outpost.api.auth import Principal
from outpost.errors import ThrottledError, UnauthorizedError
from outpost.submission.server import SubmissionServer
from outpost.submission.settings import SubmissionSettings
from outpost_local.pki import TestPki

pytestmark = pytest.mark.timeout(120)
HOST = "127.0.0.1"
GOOD = "op_good"


class Keys:
    def __init__(self) -> None:
        self.throttle = False

    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        if authorization != f"Bearer {GOOD}":
            raise UnauthorizedError("invalid", field="Authorization")
        if self.throttle:
            raise ThrottledError("slow down", 1)
        return Principal("k1", "test", frozenset({"send"}))


class Sender:
    def __init__(self) -> None:
        self.fail = False
        self.got: list[tuple[bytes, list[str]]] = []

    def send_raw(self, data: bytes, *, rcpts: list[str], principal: Principal,
                 context: Any = None) -> tuple[dict, bool]:
        if self.fail:
            raise RuntimeError("the store is down")
        self.got.append((data, rcpts))
        return {"id": "01" + "a" * 24}, False


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def rig(pki: TestPki) -> Iterator[tuple[SubmissionServer, Keys, Sender]]:
    keys, sender = Keys(), Sender()
    # idle 2 s, session 10 s: every session here (TLS, AUTH, a few commands, 3.6 s of trickled
    # DATA) fits within them on a loaded machine, and the client's 0.2-0.3 s cadences stay far
    # from the idle limit (with 1 s and 4 s, the trickled DATA session left about a second of 4).
    settings = SubmissionSettings(host=HOST, starttls_port=0, tls_port=0, hostname="smtp.test",
                                  idle_timeout=2.0, session_timeout=10.0, max_connections_per_ip=2,
                                  max_recipients=3)
    server = SubmissionServer(settings, sender=sender, keys=keys, tls_context=pki.server_context(HOST))
    server.start_in_thread()
    yield server, keys, sender
    server.stop()


def _client(server: SubmissionServer, pki: TestPki, login: bool = True) -> smtplib.SMTP_SSL:
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    s = smtplib.SMTP_SSL(HOST, server.ports["tls"], context=ctx, timeout=30)
    if login:
        s.login("u", GOOD)
    return s


def _closed(s: smtplib.SMTP, within: float) -> float:
    """Seconds until the server closed the connection (NOOP fails), polling every 0.2 s."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            s.noop()
        except (smtplib.SMTPServerDisconnected, OSError):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"still open after {within} s")


def test_an_idle_client_is_disconnected(rig: Any, pki: TestPki) -> None:
    s = _client(rig[0], pki)
    time.sleep(3.0)  # idle_timeout 2 s
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        s.noop()


def test_a_busy_client_is_still_disconnected_at_the_session_timeout(rig: Any, pki: TestPki) -> None:
    started = time.monotonic()
    s = _client(rig[0], pki)
    _closed(s, within=30)  # a NOOP every 0.2 s: never idle for idle_timeout's 2 s
    assert time.monotonic() - started >= 9.5  # so it was session_timeout's 10 s that ended it


def test_connections_per_address_are_bounded(rig: Any, pki: TestPki) -> None:
    a, b = _client(rig[0], pki, login=False), _client(rig[0], pki, login=False)
    with pytest.raises(smtplib.SMTPConnectError) as err:
        _client(rig[0], pki, login=False)
    assert err.value.smtp_code == 421 and err.value.smtp_error.startswith(b"4.7.0")
    a.close()
    time.sleep(0.3)
    _client(rig[0], pki, login=False).close()  # a slot is free again
    b.close()


def test_recipients_per_transaction_are_bounded(rig: Any, pki: TestPki) -> None:
    with _client(rig[0], pki) as s:
        s.mail("a@example.org")
        for i in range(3):
            assert s.rcpt(f"r{i}@ok.test")[0] == 250
        assert s.rcpt("r3@ok.test") == (452, b"4.5.3 Too many recipients")
        s.rset()
        s.mail("a@example.org")
        assert s.rcpt("a@@ok.test")[0] == 553


def test_long_lines_are_refused(rig: Any, pki: TestPki) -> None:
    with _client(rig[0], pki) as s:
        assert s.docmd("NOOP", "x" * 600) == (500, b"5.5.2 Command line too long")
        s.mail("a@example.org")
        s.rcpt("r@ok.test")
        code, text = s.data(b"From: a@shop.test\r\n\r\n" + b"y" * 1200 + b"\r\n")
        assert code == 500 and text.startswith(b"5.5.2 Line too long"), text
    assert rig[2].got == []


def test_a_throttled_key_and_a_failing_store_are_temporary(rig: Any, pki: TestPki) -> None:
    server, keys, sender = rig
    with _client(server, pki) as s:
        keys.throttle = True
        s.mail("a@example.org")
        s.rcpt("r@ok.test")
        assert s.data(b"From: a@shop.test\r\n\r\nx\r\n") == (
            451, b"4.7.1 Rate limit reached for this API key; try again later")
        keys.throttle, sender.fail = False, True
        s.mail("a@example.org")
        s.rcpt("r@ok.test")
        assert s.data(b"From: a@shop.test\r\n\r\nx\r\n") == (451, b"4.3.0 Temporary failure; try again later")
        sender.fail = False
        s.mail("a@example.org")
        s.rcpt("r@ok.test")
        assert s.data(b"From: a@shop.test\r\n\r\nx\r\n") == (250, b"2.0.0 OK: queued as 01" + b"a" * 24)


def test_a_slow_data_transfer_is_not_idle(rig: Any, pki: TestPki) -> None:
    """Bytes keep a DATA alive: 3.6 s of lines every 0.3 s, past idle_timeout's 2 s."""
    with _client(rig[0], pki) as s:
        s.mail("a@example.org")
        s.rcpt("r@ok.test")
        assert s.docmd("DATA")[0] == 354
        s.send(b"From: a@shop.test\r\n\r\n")
        for _ in range(12):
            time.sleep(0.3)
            s.send(b"line\r\n")
        s.send(b".\r\n")
        assert s.getreply() == (250, b"2.0.0 OK: queued as 01" + b"a" * 24)


def _trickled_until_closed(s: smtplib.SMTP, within: float) -> float:
    """Send one byte every 0.3 s of a line that never ends; seconds until the server closes."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        readable, _, _ = select.select([s.sock], [], [], 0.3)
        if readable:
            try:
                if s.sock.recv(4096) == b"":
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
            continue
        try:
            s.sock.sendall(b"x")
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"still open after {within} s")


def test_a_line_trickled_byte_by_byte_meets_a_deadline(rig: Any, pki: TestPki) -> None:
    """Slowloris: a byte every 0.3 s never leaves the connection idle for idle_timeout's 2 s,
    but each line must be complete within it (Postfix's per-record deadline), in a command
    and in DATA alike, so the server closes the connection long before session_timeout's 10 s."""
    for in_data in (False, True):
        s = _client(rig[0], pki)
        if in_data:
            s.mail("a@example.org")
            s.rcpt("r@ok.test")
            assert s.docmd("DATA")[0] == 354
        assert _trickled_until_closed(s, within=30) < 6.0, in_data


@pytest.fixture
def small(pki: TestPki) -> Iterator[SubmissionServer]:
    settings = SubmissionSettings(host=HOST, starttls_port=0, tls_port=0, hostname="smtp.test",
                                  max_message_bytes=2_000_000, data_budget=3_500_000,
                                  data_budget_share=1.0)  # one key here (the share: test_submission_attacks)
    server = SubmissionServer(settings, sender=Sender(), keys=Keys(), tls_context=pki.server_context(HOST))
    server.start_in_thread()
    yield server
    server.stop()


def test_message_bytes_in_flight_are_bounded_by_declared_size(small: SubmissionServer, pki: TestPki) -> None:
    ok = (250, b"2.0.0 OK: queued as 01" + b"a" * 24)
    with _client(small, pki) as a, _client(small, pki) as b:
        a.mail("a@example.org")
        a.rcpt("r@ok.test")
        assert a.docmd("DATA")[0] == 354  # no SIZE: reserves max_message_bytes (2 MB of 3.5)
        b.mail("b@example.org")
        b.rcpt("r@ok.test")
        assert b.docmd("DATA") == (451, b"4.3.2 Too many messages in flight; try again later")
        b.rset()
        b.mail("b@example.org", ["SIZE=1000"])  # declared small: fits beside A's
        b.rcpt("r@ok.test")
        assert b.data(b"From: b@shop.test\r\n\r\nsmall\r\n") == ok
        b.mail("b@example.org", ["SIZE=1000"])  # declared small, sent large: refused
        b.rcpt("r@ok.test")
        assert b.data(b"From: b@shop.test\r\n\r\n" + (b"z" * 76 + b"\r\n") * 2000)[0] == 552
        a.send(b"From: a@shop.test\r\n\r\nbig one\r\n.\r\n")
        assert a.getreply() == ok
        b.mail("b@example.org")  # A's reservation is given back
        b.rcpt("r@ok.test")
        assert b.data(b"From: b@shop.test\r\n\r\nnow\r\n") == ok
