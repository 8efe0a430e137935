"""The sender's session side through the transport protocols, with an in-memory SMTP peer
(tests/fakes/transport.py): every outcome comes from trouble.judge, a soft failure in
mid-transaction moves to the next MX (Postfix smtp_trouble.c), never after the final dot
(RFC 1047). No sockets, no store: the outcomes are collected as they are recorded."""

from __future__ import annotations

import aiosmtplib

from outpost.config import Settings
from outpost.delivery.service import DeliveryService, _Result
from outpost.delivery.transport import Timeouts, _smtp_error
from outpost.delivery.trouble import Outcome, Scope, judge
from outpost.errors import ReplyError, StageError
from outpost.mx import MxHost
from tests.fakes.transport import FakeConnector, Peer, deliver_one_domain

HOSTS = [MxHost("mx1.example.test", 10, ("192.0.2.1",)), MxHost("mx2.example.test", 20, ("192.0.2.2",))]
DATA = (b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello.\r\n",)


def _deliver(peers: dict[str, Peer], n: int = 1, *, timeouts: Timeouts | None = None
             ) -> tuple[list[tuple[int, _Result]], FakeConnector]:
    connector = FakeConnector(peers, timeouts=timeouts or Timeouts(connect=0.05, command=0.05))
    service = DeliveryService(
        settings=Settings.from_env({}), store=None, suppressions=None, queue=None,  # type: ignore[arg-type]  # not used here
        resolve_mx=lambda domain: HOSTS, connector=connector, signer_for=lambda d: None,
        return_path=lambda mid, i: f"b+{mid}.{i}@bounces.sender.test")
    return deliver_one_domain(service, n, DATA), connector  # type: ignore[return-value]


def test_421_after_rcpt_on_the_first_mx_delivers_via_the_second() -> None:
    first, second = Peer(replies={"RCPT": (421, "4.3.2 Too busy")}), Peer()
    [(index, res)] = _deliver({"192.0.2.1": first, "192.0.2.2": second})[0]
    assert res.verdict.outcome is Outcome.DELIVERED
    assert res.attempt is not None and res.attempt["mx"] == "mx2.example.test"
    assert "RCPT 421" in first.log and [d.rcpt for d in second.accepted] == ["u0@example.test"]


def test_a_drop_or_a_timeout_in_mid_transaction_moves_on_too() -> None:
    for first in (Peer(drop_at={"MAIL"}), Peer(drop_at={"DATA"}), Peer(delays={"RCPT": 1.0})):
        second = Peer()
        [(_, res)] = _deliver({"192.0.2.1": first, "192.0.2.2": second})[0]
        assert res.verdict.outcome is Outcome.DELIVERED, first.log
        assert len(second.accepted) == 1 and first.accepted == []


def test_the_last_mx_soft_failing_defers() -> None:
    peers = {"192.0.2.1": Peer(drop_at={"MAIL"}), "192.0.2.2": Peer(replies={"RCPT": (421, "4.3.2 Busy")})}
    [(_, res)] = _deliver(peers)[0]
    v = res.verdict
    assert (v.outcome, v.scope, v.command, v.code, v.status) == (Outcome.TRANSIENT, Scope.HOST, "RCPT", 421, "4.3.2")
    assert res.attempt is not None and res.attempt["mx"] == "mx2.example.test"


def test_no_next_mx_after_the_final_dot() -> None:
    first, second = Peer(drop_at={"EOD"}), Peer()
    [(_, res)] = _deliver({"192.0.2.1": first, "192.0.2.2": second})[0]
    v = res.verdict
    assert (v.outcome, v.command, v.after_dot) == (Outcome.TRANSIENT, "EOD", True) and "RFC 1047" in v.text
    assert second.log == []  # never connected


def test_the_recipients_own_failure_stays_with_it() -> None:
    first, second = Peer(replies={"RCPT": (550, "5.1.1 User unknown")}), Peer()
    [(_, res)] = _deliver({"192.0.2.1": first, "192.0.2.2": second})[0]
    v = res.verdict
    assert (v.outcome, v.scope, v.status, v.kind) == (Outcome.PERMANENT, Scope.RECIPIENT, "5.1.1", "hard")
    assert second.log == []


def test_after_the_session_limit_the_rest_defer_with_the_last_reply() -> None:
    peers = {ip: Peer(replies={"RCPT": (421, "4.3.2 Busy")}) for ip in ("192.0.2.1", "192.0.2.2")}
    results, connector = _deliver(peers, 3)
    assert len(connector.opened) == 2  # Postfix smtp_mx_session_limit
    assert [i for i, _ in results] == [0, 1, 2]
    assert all(res.verdict.outcome is Outcome.TRANSIENT for _, res in results)
    assert all("session limit of 2" in res.verdict.text for _, res in results[1:])


def test_sessions_are_reused_with_rset_and_closed_with_quit() -> None:
    peer = Peer()
    results, connector = _deliver({"192.0.2.1": peer}, 3)
    assert [r.verdict.outcome for _, r in results] == [Outcome.DELIVERED] * 3
    assert len(connector.opened) == 1 and peer.log.count("RSET 250") == 2
    assert peer.log[-1] == "QUIT 221"  # the pool closed it at the end


def test_a_refused_connection_and_a_421_greeting_move_on_before_any_transaction() -> None:
    second = Peer()
    results, _ = _deliver({"192.0.2.2": second})  # nothing at 192.0.2.1
    assert results[0][1].verdict.outcome is Outcome.DELIVERED
    busy = Peer(replies={"CONNECT": (421, "4.3.2 Shutting down")})
    results, _ = _deliver({"192.0.2.1": busy, "192.0.2.2": Peer(replies={"CONNECT": (421, "4.3.2 Also")})})
    v = results[0][1].verdict
    assert (v.outcome, v.scope, v.command, v.text) == (Outcome.TRANSIENT, Scope.RECIPIENT, "CONNECT", "4.3.2 Also")


def test_the_one_map_from_aiosmtplib_exceptions_to_facts() -> None:
    reply = _smtp_error(aiosmtplib.SMTPResponseException(421, "4.3.2 Busy"), "RCPT")
    assert isinstance(reply, ReplyError) and (reply.code, reply.text, reply.command, reply.enhanced) == (
        421, "4.3.2 Busy", "RCPT", "4.3.2")
    refused = _smtp_error(aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 Unknown", "x@example.test")]), "MAIL")
    assert isinstance(refused, ReplyError) and (refused.code, refused.command) == (550, "RCPT")
    unreadable = _smtp_error(aiosmtplib.SMTPResponseException(-1, "garbage"), "MAIL")
    assert isinstance(unreadable, StageError) and unreadable.command == "MAIL"
    lost = _smtp_error(aiosmtplib.SMTPServerDisconnected("gone"), "EOD", after_dot=True)
    assert isinstance(lost, StageError) and lost.after_dot and isinstance(lost.cause, ConnectionError)
    timeout = _smtp_error(aiosmtplib.SMTPReadTimeoutError("read"), "DATA")
    assert isinstance(timeout, StageError) and judge(timeout).status == "4.4.2"
