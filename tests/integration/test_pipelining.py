"""SMTP PIPELINING (RFC 2920) against real servers at internet distance (issue 15 item 3).

The MX hosts are outpost_local.latency_mx.LatencyMx: aiosmtpd (PIPELINING, STARTTLS with the
test CA, verified) behind a relay that delays every byte the server sends by one round trip, and
counts the round trips ("flights") the client waited for. Postfix from Debian is the peer we did
not write (skipped where it cannot run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from postfix_rig import running_postfix

from outpost.delivery.transport import SmtpConnector, Timeouts
from outpost.delivery.trouble import judge
from outpost.errors import ReplyError, StageError
from outpost_local.latency_mx import LatencyMx, LatencyProxy, measure_rtt
from outpost_local.lifecycle import free_port
from outpost_local.mx import RcptReply, Slow
from outpost_local.pki import TestPki
from outpost_local.postfix import PostfixInstance

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.15.2"
NAME = "mx.lat.test"
BODY = b"From: a@sender.test\r\nTo: b@lat.test\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def connector(pki: TestPki, port: int, *, pipelining: bool = True, **timeouts: float) -> SmtpConnector:
    return SmtpConnector("mta.sender.test", port=port, ca_bundle=str(pki.ca_bundle),
                         timeouts=Timeouts(**timeouts), pipelining=pipelining)


def flights_per_message(mx: LatencyMx, c: SmtpConnector, n: int = 3) -> tuple[list[int], list[float], bool]:
    """Send n messages on one verified-TLS session: the round trips and seconds each took."""
    async def run() -> tuple[list[int], list[float], bool]:
        s = await c.open(NAME, HOST, "verify")
        assert s.tls is not None and s.tls.verified
        flights, times = [], []
        for i in range(n):
            f, t = mx.flights, time.perf_counter()
            reply = await s.send(f"bounce-{i}@sender.test", f"user{i}@lat.test", BODY, envid=f"m{i}")
            assert reply.code == 250
            flights.append(mx.flights - f)
            times.append(time.perf_counter() - t)
        offered = s.supports("pipelining")
        await s.close()
        return flights, times, offered
    return asyncio.run(run())


def test_the_relay_delays_each_round_trip(pki: TestPki) -> None:
    with LatencyMx(HOST, 0, None, pki.server_context(NAME), NAME, delay=0.15) as mx:
        # The greeting waits for the TCP handshake's round trip and its own.
        assert measure_rtt(HOST, mx.port) >= 0.3


def test_a_jittered_relay_varies_each_round_trip_within_its_bounds(pki: TestPki) -> None:
    with LatencyMx(HOST, 0, None, pki.server_context(NAME), NAME, delay=0.1, jitter=0.05, seed=7) as mx:
        waits = [measure_rtt(HOST, mx.port, tries=1) for _ in range(6)]
    assert all(w >= 2 * 0.05 for w in waits)  # two round trips of at least delay - jitter each
    assert max(waits) - min(waits) > 0.01  # drawn per round trip, not one fixed delay


def test_pipelined_mail_rcpt_data_cost_one_round_trip_instead_of_four(pki: TestPki) -> None:
    delay = 0.1
    with LatencyMx(HOST, 0, None, pki.server_context(NAME), NAME, delay=delay) as mx:
        piped, piped_t, offered = flights_per_message(mx, connector(pki, mx.port))
        serial, serial_t, _ = flights_per_message(mx, connector(pki, mx.port, pipelining=False))
        assert len(mx.wait_for(6)) == 6
        log = [c.split()[0] for c, _ in mx.mx.log]
    assert offered
    # The first message of a session: MAIL+RCPT+DATA, then the content: 2 round trips (serial 4);
    # each later one adds the RSET to the group: still 2 (serial 5).
    assert piped == [2, 2, 2]
    assert serial == [4, 5, 5]
    assert min(piped_t) >= 2 * delay and max(serial_t[1:]) >= 5 * delay
    assert "RSET" in log and log.count("DATA") == 6  # the same commands, in the same order


def test_a_server_without_pipelining_gets_the_serial_dialogue(pki: TestPki) -> None:
    with LatencyMx(HOST, 0, None, pki.server_context(NAME), NAME, delay=0.05, pipelining=False) as mx:
        flights, _, offered = flights_per_message(mx, connector(pki, mx.port))
        assert [r.rcpt_tos for r in mx.wait_for(3)] == [["user0@lat.test"], ["user1@lat.test"], ["user2@lat.test"]]
    assert not offered
    assert flights == [4, 5, 5]


def _outcomes(mx: LatencyMx, c: SmtpConnector, rcpts: list[str]) -> list[tuple]:
    """Each recipient's transaction on one session, as the sender judges it."""
    async def run() -> list[tuple]:
        s = await c.open(NAME, HOST, "verify")
        out: list[tuple] = []
        for i, rcpt in enumerate(rcpts + ["after@lat.test"]):
            try:
                reply = await s.send(f"bounce-{i}@sender.test", rcpt, BODY, envid=f"m{i}")
                out.append((rcpt, reply.code, reply.command))
                v = judge(reply)
            except ReplyError as exc:
                out.append((rcpt, exc.code, exc.text, exc.command))
                v = judge(exc)
            out.append((v.outcome, v.scope, v.status, v.command))
        assert s.is_open  # refusals do not end the session
        await s.close()
        return out
    return asyncio.run(run())


def test_mixed_rcpt_replies_pipelined_are_judged_as_unpipelined(pki: TestPki) -> None:
    behaviours = [RcptReply(550, "5.1.1 No such user", only=["gone@lat.test"]),
                  RcptReply(451, "4.3.0 Try again later", only=["busy@lat.test"])]
    rcpts = ["gone@lat.test", "ok@lat.test", "busy@lat.test"]
    with LatencyMx(HOST, 0, behaviours, pki.server_context(NAME), NAME, delay=0.02) as mx:
        piped = _outcomes(mx, connector(pki, mx.port), rcpts)
        serial = _outcomes(mx, connector(pki, mx.port, pipelining=False), rcpts)
        delivered = [r.rcpt_tos for r in mx.wait_for(4)]
    assert piped == serial
    assert piped[0] == ("gone@lat.test", 550, "5.1.1 No such user", "RCPT")
    assert piped[2][:3] == ("ok@lat.test", 250, "EOD")
    assert piped[4] == ("busy@lat.test", 451, "4.3.0 Try again later", "RCPT")
    assert piped[6][:2] == ("after@lat.test", 250)  # the session goes on after the refusals
    assert piped[1][1:3] != piped[5][1:3]  # a permanent and a transient verdict, as before
    assert delivered == [["ok@lat.test"], ["after@lat.test"]] * 2


def test_a_server_that_stalls_mid_pipeline_is_bounded_by_the_command_timeout(pki: TestPki) -> None:
    with LatencyMx(HOST, 0, Slow("RCPT", 60), pki.server_context(NAME), NAME, delay=0.05) as mx:
        c = connector(pki, mx.port, command=1.5)

        async def run() -> tuple[BaseException, float, bool]:
            s = await c.open(NAME, HOST, "verify")
            t = time.perf_counter()
            with pytest.raises(StageError) as caught:
                await s.send("bounce@sender.test", "user@lat.test", BODY)
            return caught.value, time.perf_counter() - t, s.is_open

        exc, took, still_open = asyncio.run(run())
    assert isinstance(exc, StageError) and exc.command == "RCPT" and not exc.after_dot
    assert 1.5 <= took < 10
    assert not still_open  # its state is unknown: never reused
    assert mx.mx.received == []


@pytest.fixture
def postfix(pki: TestPki, tmp_path: Path) -> Iterator[PostfixInstance]:
    host = "127.0.15.7"
    with running_postfix(tmp_path / "postfix", host, free_port(host), "lat.test", {"alice", "bob"},
                         pki.cert_files(NAME), hostname=NAME) as pf:
        yield pf


def test_postfix_takes_pipelined_mail_over_verified_tls(pki: TestPki, postfix: PostfixInstance) -> None:
    with LatencyProxy(HOST, 0, (postfix.host, postfix.port), delay=0.05) as proxy:
        c = connector(pki, proxy.port)

        async def run() -> tuple[list[int], list[tuple[int, str]], bool]:
            s = await c.open(NAME, HOST, "verify")
            assert s.tls is not None and s.tls.verified
            flights, outcomes = [], []
            for rcpt in ("alice@lat.test", "nobody@lat.test", "bob@lat.test"):
                f = proxy.flights
                try:
                    reply = await s.send("bounce@sender.test", rcpt, BODY)
                    outcomes.append((reply.code, reply.command))
                except ReplyError as exc:
                    outcomes.append((exc.code, exc.command))
                flights.append(proxy.flights - f)
            offered = s.supports("pipelining")
            await s.close()
            return flights, outcomes, offered

        flights, outcomes, offered = asyncio.run(run())
    assert offered  # Postfix offers PIPELINING
    assert outcomes == [(250, "EOD"), (550, "RCPT"), (250, "EOD")]
    # alice: MAIL+RCPT+DATA, content; nobody: RSET+MAIL+RCPT+DATA (refused, nothing more);
    # bob: RSET+MAIL+RCPT+DATA, content.
    assert flights == [2, 1, 2]
    assert len(postfix.wait_delivered(2, timeout=30)) == 2


def test_a_data_accepted_with_no_recipient_gets_a_lone_dot_and_the_session_goes_on() -> None:
    """RFC 2920 §3.1: the client cannot assume DATA is refused when every RCPT was; a server
    that answers 354 anyway gets a lone dot (an empty message with no recipient), then RSET."""
    lines: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 odd.test ESMTP\r\n")
        replies = {b"EHLO": b"250-odd.test\r\n250 PIPELINING\r\n", b"MAIL": b"250 2.1.0 Ok\r\n",
                   b"RSET": b"250 2.0.0 Ok\r\n", b"DATA": b"354 Go ahead\r\n", b"QUIT": b"221 Bye\r\n"}
        rcpts = 0
        while line := await reader.readline():
            lines.append(line.rstrip())
            verb = line[:4].upper()
            if verb == b"RCPT":
                rcpts += 1
                writer.write(b"550 5.1.1 No such user\r\n" if rcpts == 1 else b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                writer.write(replies[verb])
                while (body := await reader.readline()) != b".\r\n":
                    lines.append(body.rstrip())
                lines.append(b".")
                writer.write(b"554 5.5.1 No valid recipients\r\n" if rcpts == 1 else b"250 2.0.0 Ok: queued as X1\r\n")
            else:
                writer.write(replies.get(verb, b"500 5.5.2 What?\r\n"))
        writer.close()

    async def run() -> list[tuple[int, str]]:
        server = await asyncio.start_server(peer, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        s = await SmtpConnector("mta.sender.test", port=port).open("odd.test", HOST)
        out = []
        for rcpt in ("gone@odd.test", "ok@odd.test"):
            try:
                reply = await s.send("bounce@sender.test", rcpt, BODY)
                out.append((reply.code, reply.command))
            except ReplyError as exc:
                out.append((exc.code, exc.command))
        await s.close()
        server.close()
        return out

    assert asyncio.run(run()) == [(550, "RCPT"), (250, "EOD")]
    # The first transaction's DATA was answered 354: a lone dot, no content; the second group
    # starts with RSET and carries the message.
    first_dot = lines.index(b".")
    assert lines[first_dot - 1] == b"DATA" and b"Hello." not in lines[:first_dot]
    assert lines[first_dot + 1] == b"RSET" and b"Hello." in lines[first_dot:]
