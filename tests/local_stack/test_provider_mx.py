"""The provider emulators (outpost_local.mx RateLimit / SessionCap / ConnectionCap, and the
provider zone of outpost_local.providers_rig), driven over real loopback sockets with smtplib.

Clients bind their own source address in 127.0.0.0/8 so "per client IP" is tested with two
real peers; time is a clock the test moves.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.resolver
import pytest

from outpost.delivery.providers import provider_for
from outpost_local.dns import DnsServer
from outpost_local.mx import (
    END_OF_DATA,
    GMAIL_RATE,
    OUTLOOK_RATE,
    YAHOO_TSS04,
    ConnectionCap,
    MxServer,
    RateLimit,
    SessionCap,
)
from outpost_local.pki import TestPki
from outpost_local.providers_rig import EMULATIONS, SITES, Emulation, scaled, start_providers

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.31"
IP_A, IP_B = "127.0.0.1", "127.0.0.9"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def msg(n: int) -> bytes:
    return f"From: a@sender.test\r\nTo: u{n}@gmail.test\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


def connect(server: MxServer, ip: str = IP_A) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10,
                          source_address=(ip, 0))
    client.ehlo()
    return client


def send(client: smtplib.SMTP, n: int) -> tuple[str, int, str]:
    """One transaction; returns (the stage that failed or "ok", code, text)."""
    code, text = client.mail("a@sender.test")
    if code >= 300:
        return "MAIL", code, text.decode()
    code, text = client.rcpt(f"u{n}@gmail.test")
    if code >= 300:
        if code != 421:  # after a 421 the server has closed the connection
            client.rset()
        return "RCPT", code, text.decode()
    code, text = client.data(msg(n))
    if code >= 300:
        return END_OF_DATA, code, text.decode()
    return "ok", code, text.decode()


def closed(client: smtplib.SMTP) -> bool:
    try:
        client.noop()
    except smtplib.SMTPServerDisconnected:
        return True
    return False


# -- RateLimit --------------------------------------------------------------------------------


def test_gmail_rate_limit_answers_421_4_7_28_exactly_above_n_per_window_and_recovers(
        mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()
    rate = RateLimit(3, 60.0, GMAIL_RATE, stage=END_OF_DATA, clock=clock)
    server = mx_factory(HOST, 0, rate)
    c = connect(server)
    assert [send(c, n)[0] for n in range(3)] == ["ok", "ok", "ok"]
    stage, code, text = send(c, 3)
    # Gmail's own text, with the client's address, at end of DATA; a 421 closes the session.
    assert (stage, code) == (END_OF_DATA, 421)
    assert text == ("4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail "
                    "originating from your IP address. To protect our users from spam, mail sent from "
                    "your IP address has been temporarily rate limited.")
    assert closed(c)
    # Still within the window (a sliding one): a new connection is throttled too.
    clock.now += 59.9
    c = connect(server)
    assert send(c, 4)[1] == 421
    # Another client IP has its own window.
    other = connect(server, IP_B)
    assert [send(other, n)[0] for n in range(10, 13)] == ["ok", "ok", "ok"]
    assert send(other, 13)[1] == 421
    # After the window the first IP recovers, for exactly N more.
    clock.now += 0.2
    c = connect(server)
    assert [send(c, n)[0] for n in range(20, 24)] == ["ok", "ok", "ok", END_OF_DATA]
    assert rate.accepted == len(server.received) == 9
    assert rate.throttled == 4
    assert rate.accepted_by_ip == {IP_A: 6, IP_B: 3}
    assert rate.throttled_by_ip == {IP_A: 3, IP_B: 1}


def test_sliding_window_frees_one_message_per_expired_one(mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()
    server = mx_factory(HOST, 0, RateLimit(2, 10.0, GMAIL_RATE, stage="RCPT", clock=clock))
    c = connect(server)
    assert send(c, 0)[0] == "ok"
    clock.now += 5
    assert send(c, 1)[0] == "ok"
    assert send(c, 2)[:2] == ("RCPT", 421)
    clock.now += 5  # the first message left the window, the second has not
    c = connect(server)
    assert send(c, 3)[0] == "ok"
    assert send(c, 4)[:2] == ("RCPT", 421)


def test_fixed_windows_start_at_multiples_of_the_window(mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()  # 1000.0: the window [960, 1020) has 20 s left
    server = mx_factory(HOST, 0, RateLimit(2, 60.0, GMAIL_RATE, stage="RCPT", fixed=True, clock=clock))
    c = connect(server)
    assert [send(c, n)[0] for n in range(2)] == ["ok", "ok"]
    assert send(c, 2)[:2] == ("RCPT", 421)
    clock.now = 1019.9
    assert send(connect(server), 3)[:2] == ("RCPT", 421)
    clock.now = 1020.0  # a new window, whatever a sliding one would still hold
    c = connect(server)
    assert [send(c, n)[0] for n in range(4, 7)] == ["ok", "ok", "RCPT"]


def test_outlook_451_4_7_650_at_rcpt_keeps_the_session_open(mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()
    rate = RateLimit(2, 60.0, OUTLOOK_RATE, stage="RCPT", clock=clock)
    server = mx_factory(HOST, 0, rate)
    c = connect(server)
    assert [send(c, n)[0] for n in range(2)] == ["ok", "ok"]
    stage, code, text = send(c, 2)
    assert (stage, code) == ("RCPT", 451)
    assert text == "4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation."
    # 451 is not 421: the connection stays, and every further message is refused alike.
    assert not closed(c)
    assert send(c, 3)[:2] == ("RCPT", 451)
    # Recipients of one transaction: the first decides, the message counts once.
    c.mail("a@sender.test")
    assert [c.rcpt(f"x{i}@outlook.test")[0] for i in range(3)] == [451, 451, 451]
    c.rset()
    clock.now += 60
    c.mail("a@sender.test")
    assert [c.rcpt(f"y{i}@outlook.test")[0] for i in range(3)] == [250, 250, 250]
    assert c.data(msg(9))[0] == 250
    wait_until(lambda: rate.accepted == 3)  # counted once the 250 went out, just after the client read it
    assert rate.counters() == {"accepted": 3, "throttled": 5}


def test_yahoo_tss04_after_m_messages_then_a_deferral_then_afresh(mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()
    rate = RateLimit(4, None, YAHOO_TSS04, stage="MAIL", block_for=100.0, clock=clock)
    server = mx_factory(HOST, 0, rate)
    c = connect(server)
    assert [send(c, n)[0] for n in range(4)] == ["ok"] * 4
    stage, code, text = send(c, 4)
    assert (stage, code) == ("MAIL", 421)
    assert text == ("4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or "
                    "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes")
    assert closed(c)
    clock.now += 99  # "after M messages" has no window: it stays until the deferral ends ...
    assert send(connect(server), 5)[:2] == ("MAIL", 421)
    clock.now += 1.5  # ... which it does 100 s after the first TSS04, with a fresh count
    c = connect(server)
    assert [send(c, n)[0] for n in range(6, 11)] == ["ok"] * 4 + ["MAIL"]
    assert rate.counters() == {"accepted": 8, "throttled": 3}


def test_yahoo_without_a_deferral_stays_deferred_after_m(mx_factory: Callable[..., MxServer]) -> None:
    clock = Clock()
    server = mx_factory(HOST, 0, RateLimit(1, None, YAHOO_TSS04, stage="MAIL", clock=clock))
    assert send(connect(server), 0)[0] == "ok"
    clock.now += 10 ** 6
    assert send(connect(server), 1)[:2] == ("MAIL", 421)
    assert send(connect(server, IP_B), 2)[0] == "ok"


# -- SessionCap and ConnectionCap -------------------------------------------------------------


def test_session_cap_closes_after_n_messages_per_connection(mx_factory: Callable[..., MxServer]) -> None:
    cap = SessionCap(2)
    server = mx_factory(HOST, 0, cap)
    c = connect(server)
    assert [send(c, n)[0] for n in range(2)] == ["ok", "ok"]
    assert send(c, 2) == ("MAIL", 421, "4.7.0 Too many messages in this session, closing connection")
    assert closed(c)
    c = connect(server)  # a new session starts again at zero
    assert [send(c, n)[0] for n in range(3, 6)] == ["ok", "ok", "MAIL"]
    assert cap.counters() == {"accepted": 4, "throttled": 2, "max_per_connection": 2}


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def greet(server: MxServer, ip: str = IP_A) -> tuple[socket.socket, bytes]:
    s = socket.create_connection((server.host, server.port), timeout=10, source_address=(ip, 0))
    return s, s.recv(1024)


def test_connection_cap_answers_421_at_the_greeting_per_client_ip(
        mx_factory: Callable[..., MxServer], tmp_path: Path) -> None:
    cap = ConnectionCap(2)
    server = mx_factory(HOST, 0, cap, hostname="mx.cap.test")
    a1, g1 = greet(server)
    a2, g2 = greet(server)
    assert g1.startswith(b"220 ") and g2.startswith(b"220 ")
    a3, g3 = greet(server)
    assert g3 == b"421 4.7.0 mx.cap.test Error: too many connections from 127.0.0.1\r\n"
    assert a3.recv(1024) == b""  # closed after the 421 (RFC 5321 §3.8)
    b1, gb = greet(server, IP_B)  # another IP is not counted against this one
    assert gb.startswith(b"220 ")
    a1.close()
    wait_until(lambda: cap.open_by_ip[IP_A] == 1)
    a4, g4 = greet(server)
    assert g4.startswith(b"220 ")
    assert cap.counters() == {"accepted": 0, "throttled": 1, "connections": 5, "refused": 1, "open": 3,
                              "max_concurrent": 3}
    assert cap.max_concurrent_by_ip == {IP_A: 2, IP_B: 1}
    for s in (a2, a3, a4, b1):
        s.close()
    wait_until(lambda: cap.open == 0)


def test_connection_cap_counts_sessions_through_starttls(
        mx_factory: Callable[..., MxServer], tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    cap = ConnectionCap(None)
    server = mx_factory(HOST, 0, [cap, SessionCap(5)], pki.server_context("mx.tls.test"), hostname="mx.tls.test")
    clients = []
    for n in range(3):
        c = connect(server)
        c._host = "mx.tls.test"  # type: ignore[attr-defined]
        c.starttls(context=pki.client_context())
        c.ehlo()
        assert send(c, n)[0] == "ok"
        clients.append(c)
    assert (cap.open, cap.max_concurrent, cap.refused) == (3, 3, 0)
    for c in clients:
        c.quit()
    wait_until(lambda: cap.open == 0)
    assert cap.counters()["accepted"] == 3


# -- the provider zone ------------------------------------------------------------------------


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[tuple[DnsServer, TestPki]]:
    with DnsServer("127.0.0.53") as server:
        yield server, TestPki(tmp_path / "pki")


def test_provider_zone_resolves_to_emulators_grouped_by_provider(zone: tuple[DnsServer, TestPki]) -> None:
    dns_server, pki = zone
    clock = Clock()
    hosts = start_providers(dns_server, pki, ip_prefix="127.0.32", port=0, clock=clock,
                            emulations={"google": Emulation(GMAIL_RATE, END_OF_DATA, per_window=2, window=60.0)})
    try:
        resolver = dns_server.resolver()
        addresses = set()
        for site in SITES:
            (mx,) = resolver.resolve(site.domain, "MX")
            name = str(mx.exchange).rstrip(".")
            assert name == site.mx
            assert provider_for(name) == site.provider  # Outpost's grouping sees a provider
            (a,) = resolver.resolve(name, "A")
            assert str(a) == hosts[site.provider].ip == f"127.0.32.{site.octet}"
            addresses.add(str(a))
            # A real session with STARTTLS verified against the provider's MX name.
            host = hosts[site.provider]
            with smtplib.SMTP(str(a), host.server.port, local_hostname="client.test", timeout=10) as c:
                c._host = name  # type: ignore[attr-defined]
                c.starttls(context=pki.client_context())
                c.ehlo()
                assert send(c, 0)[0] == "ok"
        assert len(addresses) == len(SITES)
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve("nosuch.l.google.com", "A")
        # The google override (2 a minute) took effect; the others run EMULATIONS' defaults.
        google = hosts["google"]
        c = connect(google.server)
        assert send(c, 1)[0] == "ok"
        assert send(c, 2)[:2] == (END_OF_DATA, 421)
        assert google.counters() == {"accepted": 2, "throttled": 1, "session_capped": 0, "connections": 2,
                                     "refused": 0, "max_concurrent": 1}
        assert hosts["yahoo"].rate is not None and hosts["yahoo"].rate.reply == YAHOO_TSS04
        assert hosts["microsoft"].session_cap is not None and hosts["microsoft"].session_cap.per_connection == 50
    finally:
        for h in hosts.values():
            h.stop()


def test_scaled_emulation_shortens_its_windows() -> None:
    g = scaled(EMULATIONS["google"], 10)
    assert (g.per_window, g.window) == (300, 6.0)
    y = scaled(EMULATIONS["yahoo"], 4)
    assert (y.window, y.block_for) == (900.0, 1800.0)
