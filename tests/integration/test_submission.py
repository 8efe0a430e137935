"""SMTP submission (issue 13) from outside, on the session's local stack: real TLS verified
against the test CA, DynamoDB Local, the real sender delivering to a local MX, DKIM checked by
the independent verifiers (OpenDKIM, Mail::DKIM) and dkimpy.

Clients: Python's smtplib (STARTTLS and SMTP_SSL), a raw socket for what smtplib will not do
(pipelining, dropping a connection in DATA, streaming 41 MB), swaks and Debian's Postfix
(tests/integration/test_submission_clients.py). Tests that fail AUTH use their own source
address, so the per-address lockout never reaches another test.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import time
import uuid
from typing import Any

import pytest

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table, suppression_store, verp_key
from outpost.bounces.verp import read_return_path
from outpost.records import Suppression
from outpost_local.stack import BOUNCE_DOMAIN, SENDING_DOMAIN
from outpost_local.verify import (
    dkimpy_results,
    have_mail_dkim,
    have_opendkim,
    mail_dkim,
    opendkim_results,
)

pytestmark = pytest.mark.timeout(300)
FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}
QUEUED = re.compile(r"^2\.0\.0 .*queued as ([0-9a-z]{26})$")


def _ctx(stack: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.pki.ca_bundle))  # verifies name and chain


def _starttls(stack: Any, key: str | None = None, source: str | None = None) -> smtplib.SMTP:
    host = stack.config.ip(1)
    s = smtplib.SMTP(host, stack.submission.ports["starttls"], timeout=60,
                     source_address=(source, 0) if source else None)
    s.starttls(context=_ctx(stack))
    if key is not None:
        s.login("outpost", key)
    return s


def _message(subject: str, to: str = "dora@accept.test", extra: bytes = b"") -> bytes:
    return (f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: {to}\r\nSubject: {subject}\r\n".encode()
            + extra + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe, the order shipped.\r\n.dot line\r\n")


def _queued(reply: tuple[int, bytes]) -> str:
    code, text = reply
    m = QUEUED.match(text.decode())
    assert code == 250 and m, reply
    return m.group(1)


def _send(s: smtplib.SMTP, data: bytes, rcpts: list[str], mail_from: str = "app@example.org") -> str:
    code, text = s.mail(mail_from)
    assert code == 250, text
    for r in rcpts:
        code, text = s.rcpt(r)
        assert code == 250, text
    return _queued(s.data(data))


@pytest.fixture(scope="module")
def keys() -> KeyRing:
    return KeyRing(api_keys_table())


@pytest.fixture(scope="module")
def send_key(keys: KeyRing) -> str:
    return keys.create("smtp app", ["send"], rate=500, burst=2000)[0]


@pytest.fixture(scope="module")
def delivered(local_stack: Any, api: Any, send_key: str) -> tuple[str, bytes, dict, Any]:
    """One message over STARTTLS, with a Bcc and without Message-ID or Date, delivered."""
    subject = f"Order {uuid.uuid4().hex[:8]}"
    data = _message(subject, extra=b"Bcc: hidden@accept.test\r\nX-App: \xc3\xa9t\xc3\xa9\r\n")
    with _starttls(local_stack, send_key) as s:
        mid = _send(s, data, ["dora@accept.test"])
    body = api.wait_for(mid, lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
    server = local_stack.mx["accept.test"].server
    got = [r for r in server.received if subject.encode() in r.data]
    assert got, "the accepting MX got nothing"
    return mid, data, body, got[-1]


def test_starttls_message_is_delivered_as_written_and_queryable(delivered: Any) -> None:
    mid, data, body, received = delivered
    assert body["id"] == mid and body["status"] == "delivered"
    assert body["recipients"][0]["address"] == "dora@accept.test"
    assert body["from"] == f"Shop <shop@{SENDING_DOMAIN}>" and body["subject"].startswith("Order ")
    msg = received.data
    head, _, sent_body = msg.partition(b"\r\n\r\n")
    # The body byte for byte (8-bit, and the dot-stuffed line restored), the client's fields
    # unchanged, Bcc gone, Message-ID and Date added, two DKIM signatures in front.
    assert sent_body == data.partition(b"\r\n\r\n")[2]
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if not line.startswith(b"Bcc:"):
            assert line in head.split(b"\r\n"), line
    assert b"hidden@accept.test" not in msg and b"\r\nBcc:" not in msg
    assert f"Message-ID: <{mid}@{SENDING_DOMAIN}>".encode() in head
    assert re.search(rb"\r\nDate: \w{3}, \d", head)
    assert msg.count(b"DKIM-Signature:") == 2
    # BODY=8BITMIME asked of the MX (the body is 8-bit); the per-recipient VERP return path.
    assert received.mail_param("BODY") == "8BITMIME"
    rp = read_return_path(verp_key(), received.mail_from, BOUNCE_DOMAIN)
    assert rp is not None and rp.verified and rp.message_id == mid and rp.recipient_index == 0


def test_dkim_of_a_submitted_message_verifies_with_dkimpy(delivered: Any, local_stack: Any) -> None:
    assert dkimpy_results(local_stack.dns.host, local_stack.dns.port, delivered[3].data) == [True, True]


@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")
def test_dkim_of_a_submitted_message_verifies_with_opendkim(delivered: Any, local_stack: Any) -> None:
    results = opendkim_results(local_stack.dns.host, local_stack.dns.port, delivered[3].data)
    assert [r["result"] for r in results] == ["pass", "pass"], results


@pytest.mark.skipif(not have_mail_dkim(), reason="libmail-dkim-perl not installed")
def test_dkim_of_a_submitted_message_verifies_with_mail_dkim(delivered: Any, local_stack: Any) -> None:
    sigs, overall = mail_dkim(local_stack.dns.host, local_stack.dns.port, delivered[3].data)
    assert overall == "pass" and any(s.result == "pass" and s.algorithm == "rsa-sha256" for s in sigs), sigs


def test_implicit_tls_with_smtp_ssl(local_stack: Any, api: Any, send_key: str) -> None:
    host = local_stack.config.ip(1)
    with smtplib.SMTP_SSL(host, local_stack.submission.ports["tls"], context=_ctx(local_stack), timeout=60) as s:
        code, _ = s.ehlo()
        assert code == 250 and "auth" in s.esmtp_features and "starttls" not in s.esmtp_features
        assert s.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        s.login("anything", send_key)  # the user name is not checked
        mid = _send(s, _message("over 465"), ["eve@accept.test", "Eve@accept.test", "frank@accept.test"])
    status, body = api.call("GET", f"/v1/messages/{mid}")
    assert status == 200 and [r["address"] for r in body["recipients"]] == ["eve@accept.test", "frank@accept.test"]


def test_ehlo_before_tls_offers_starttls_and_no_auth(local_stack: Any) -> None:
    with smtplib.SMTP(local_stack.config.ip(1), local_stack.submission.ports["starttls"], timeout=30) as s:
        s.ehlo("client.test")
        features = s.esmtp_features
        assert "starttls" in features and "auth" not in features
        for name in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"):
            assert name in features, name
        assert features["size"] == "41943040"
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0u\0op_x").decode()) == (
            530, b"5.7.0 Must issue a STARTTLS command first")
        assert s.docmd("MAIL", "FROM:<a@outpost.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert s.docmd("RCPT", "TO:<victim@accept.test>")[0] == 530


@pytest.mark.parametrize("listener", ["starttls", "tls"])
def test_open_relay_probe_is_refused_without_auth(local_stack: Any, listener: str) -> None:
    host, port = local_stack.config.ip(1), local_stack.submission.ports[listener]
    s = (smtplib.SMTP_SSL(host, port, context=_ctx(local_stack), timeout=30) if listener == "tls"
         else _starttls(local_stack))
    with s:
        s.ehlo("probe.test")
        assert s.docmd("MAIL", "FROM:<spammer@example.org>") == (530, b"5.7.0 Authentication required")
        assert s.docmd("RCPT", "TO:<victim@accept.test>")[0] == 530
        assert s.docmd("DATA")[0] == 530


def test_wrong_key_is_535_and_repeated_failures_lock_the_address_out(local_stack: Any, send_key: str) -> None:
    source = "127.0.9.11"
    for i in range(5):  # AUTH PLAIN by hand: smtplib's login() tries PLAIN, then LOGIN
        with _starttls(local_stack, source=source) as s:
            s.ehlo()
            assert _auth_plain(s, f"op_wrong{i}") == (535, b"5.7.8 Authentication credentials invalid")
    with _starttls(local_stack, source=source) as s:  # the right key, but this address is locked out
        s.ehlo()
        code, text = _auth_plain(s, send_key)
        assert code == 454 and text.startswith(b"4.7.0 "), text
    with _starttls(local_stack, send_key, source="127.0.9.12"):  # another address is not
        pass


def _auth_plain(s: smtplib.SMTP, key: str) -> tuple[int, bytes]:
    return s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0outpost\0{key}".encode()).decode())


def test_revoked_key_and_key_without_send_scope_are_535(local_stack: Any, keys: KeyRing) -> None:
    revoked, record = keys.create("revoked", ["send"])
    keys.revoke(record["key_id"])
    read_only, _ = keys.create("reader", ["read"])
    for key in (revoked, read_only):
        with _starttls(local_stack, source="127.0.9.13") as s:
            s.ehlo()
            assert _auth_plain(s, key) == (535, b"5.7.8 Authentication credentials invalid")


def test_auth_login_works_too(local_stack: Any, send_key: str) -> None:
    with _starttls(local_stack) as s:
        s.ehlo()
        assert s.docmd("AUTH", "LOGIN")[0] == 334
        assert s.docmd(base64.b64encode(b"outpost").decode())[0] == 334
        assert s.docmd(base64.b64encode(send_key.encode()).decode()) == (235, b"2.7.0 Authentication successful")


def test_unverified_or_foreign_from_domain_is_550_5_7_1(local_stack: Any, keys: KeyRing, send_key: str) -> None:
    bound = keys.create("bound", ["send"], domains=["other.test"])[0]
    cases = [(send_key, b"From: x@unverified.test\r\n"), (bound, f"From: x@{SENDING_DOMAIN}\r\n".encode()),
             (send_key, f"From: a@{SENDING_DOMAIN}, b@{SENDING_DOMAIN}\r\n".encode()), (send_key, b"")]
    for key, from_line in cases:
        with _starttls(local_stack, key) as s:
            s.mail("a@example.org")
            s.rcpt("dora@accept.test")
            code, text = s.data(from_line + b"Subject: x\r\n\r\nbody\r\n")
            assert code == 550 and text.startswith(b"5.7.1 "), (from_line, text)


def test_same_message_id_twice_gets_the_same_id(local_stack: Any, api: Any, send_key: str) -> None:
    msgid = f"<{uuid.uuid4().hex}@app.example.org>".encode()
    data = _message("retried", extra=b"Message-ID: " + msgid + b"\r\n")
    with _starttls(local_stack, send_key) as s:
        first = _send(s, data, ["gina@accept.test"])
    with _starttls(local_stack, send_key) as s:  # the client's retry after a lost reply
        again = _send(s, data, ["gina@accept.test"])
        other_rcpts = _send(s, data, ["hank@accept.test"])  # a split recipient list: another message
    assert again == first and other_rcpts != first
    for mid in (first, other_rcpts):
        body = api.wait_for(mid, lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
        assert body["status"] == "delivered"
    received = [r for r in local_stack.mx["accept.test"].server.received if msgid in r.data]
    assert sorted(r.rcpt_tos[0] for r in received) == ["gina@accept.test", "hank@accept.test"]


def _raw(stack: Any, key: str) -> ssl.SSLSocket:
    """An implicit-TLS socket, authenticated, for what smtplib cannot do."""
    sock = socket.create_connection((stack.config.ip(1), stack.submission.ports["tls"]), timeout=120)
    tls = _ctx(stack).wrap_socket(sock, server_hostname=stack.config.ip(1))
    f = tls.makefile("rb")
    _replies(f, 1)
    tls.sendall(b"EHLO raw.test\r\nAUTH PLAIN " + base64.b64encode(f"\0u\0{key}".encode()) + b"\r\n")
    assert _replies(f, 2)[1].startswith(b"235 "), "AUTH failed"
    tls.reader = f  # type: ignore[attr-defined]
    return tls


def _close(tls: ssl.SSLSocket) -> None:
    """Really close: the makefile() reader holds the socket open, and close() alone waits for it."""
    tls.reader.close()  # type: ignore[attr-defined]
    tls.shutdown(socket.SHUT_RDWR)
    tls.close()


def _replies(f: Any, n: int) -> list[bytes]:
    """The last line of each of the next `n` replies."""
    out = []
    while len(out) < n:
        line = f.readline()
        assert line, "connection closed"
        if line[3:4] != b"-":
            out.append(line.rstrip())
    return out


def test_dropped_connection_in_data_stores_nothing(local_stack: Any, api: Any, send_key: str) -> None:
    rcpt = f"drop-{uuid.uuid4().hex[:10]}@accept.test"
    tls = _raw(local_stack, send_key)
    tls.sendall(f"MAIL FROM:<a@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    assert _replies(tls.reader, 3)[2].startswith(b"354")  # type: ignore[attr-defined]
    tls.sendall(_message("dropped", to=rcpt)[:-20])  # most of it, never the final dot
    _close(tls)
    deadline = time.monotonic() + 30
    while local_stack.submission.budget.used and time.monotonic() < deadline:
        time.sleep(0.1)
    assert local_stack.submission.budget.used == 0  # the server saw the drop and let the DATA go
    with _starttls(local_stack, send_key) as s:  # the server is fine, and took nothing
        assert s.noop() == (250, b"2.0.0 OK")
    status, body = api.call("GET", f"/v1/messages?recipient={rcpt}")
    assert status == 200 and body["items"] == []


def test_message_over_size_is_552_5_3_4(local_stack: Any, send_key: str) -> None:
    with _starttls(local_stack, send_key) as s:  # declared with SIZE: refused at MAIL
        assert s.docmd("MAIL", "FROM:<a@example.org> SIZE=43000000") == (552, b"5.3.4 Message too big for system")
    rcpt = f"big-{uuid.uuid4().hex[:10]}@accept.test"
    tls = _raw(local_stack, send_key)
    tls.sendall(f"MAIL FROM:<a@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    assert _replies(tls.reader, 3)[2].startswith(b"354")  # type: ignore[attr-defined]
    before = _rss_peak_reset()
    tls.sendall(_message("big", to=rcpt).partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
    block = (b"x" * 76 + b"\r\n") * 13_443  # 1 MiB (1,048,554 octets)
    for _ in range(41):  # 41 MiB, over SIZE's 40 MiB, streamed: the client holds 1 MiB
        tls.sendall(block)
    tls.sendall(b".\r\n")
    assert _replies(tls.reader, 1) == [b"552 5.3.4 Message too big for system"]  # type: ignore[attr-defined]
    grown = _rss_peak() - before
    tls.sendall(b"NOOP\r\n")  # the session goes on
    assert _replies(tls.reader, 1) == [b"250 2.0.0 OK"]  # type: ignore[attr-defined]
    _close(tls)
    print(f"peak RSS growth while refusing 41 MiB: {grown / 2**20:.0f} MiB")
    # The server keeps at most SIZE bytes of a message (then drops what is past it): the peak
    # is about SIZE plus aiosmtpd's per-line overhead, not the 41 MB plus whatever follows.
    assert grown < 200 * 1024 * 1024, grown


def _rss_peak_reset() -> int:
    """Reset this process's peak RSS (Linux clear_refs 5) and return the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _rss_peak() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_a_thousand_messages_over_pipelined_connections(local_stack: Any, api: Any, keys: KeyRing) -> None:
    """10 connections x 100 messages, each transaction's MAIL, RCPT and DATA sent in one write
    (RFC 2920). The recipient is suppressed: every message is stored and answered, and the
    sender is not asked to deliver a thousand messages in the middle of the session."""
    from concurrent.futures import ThreadPoolExecutor

    key = keys.create("bulk", ["send"], rate=5000, burst=5000)[0]
    rcpt = f"bulk-{uuid.uuid4().hex[:8]}@accept.test"
    suppression_store().add(Suppression.new(rcpt, time.time(), source="manual", reason="bulk test",
                                            kind="manual"))

    def connection(n: int) -> list[str]:
        tls = _raw(local_stack, key)
        ids = []
        for i in range(100):
            message = _message(f"bulk {n}-{i}", to=rcpt)
            tls.sendall(f"MAIL FROM:<a@example.org> SIZE={len(message)}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            r = _replies(tls.reader, 3)  # type: ignore[attr-defined]
            assert r[0].startswith(b"250") and r[1].startswith(b"250") and r[2].startswith(b"354"), r
            tls.sendall(message + b".\r\n")
            ids.append(QUEUED.match(_replies(tls.reader, 1)[0][4:].decode()).group(1))  # type: ignore
        tls.sendall(b"QUIT\r\n")
        _close(tls)
        return ids

    assert local_stack.submission.budget.used == 0  # every earlier DATA gave its reservation back
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        ids = [i for chunk in pool.map(connection, range(10)) for i in chunk]
    elapsed = time.monotonic() - started
    print(f"1000 messages over 10 pipelined connections: {elapsed:.1f} s")
    assert len(set(ids)) == 1000
    assert elapsed < 240, elapsed  # ~20 s on an idle 2-core machine; generous for load 8+

    reader = keys.create("bulk reader", ["read"], rate=5000, burst=5000)[0]

    def status(mid: str) -> str:
        code, body = api.call("GET", f"/v1/messages/{mid}", key=reader)
        assert code == 200, body
        return str(body["recipients"][0]["state"])

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(status, ids)) == {"suppressed"}


def test_outpost_send_at_schedules_a_submitted_message_and_a_bad_one_is_550(  # s17d
        local_stack: Any, api: Any, send_key: str) -> None:
    """Over STARTTLS on the local stack: `Outpost-Send-At` an hour ahead is accepted (250) as a
    scheduled message (the API shows it scheduled, with its send_at) and can be canceled; the
    field is not in the stored message. A bad value is 550 5.6.0 naming the field, nothing stored."""
    from datetime import UTC, datetime, timedelta

    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    data = b"Outpost-Send-At: " + at.isoformat().encode() + b"\r\n" + _message("scheduled over SMTP")
    with _starttls(local_stack, send_key) as s:
        mid = _send(s, data, ["later@accept.test"])
        s.mail("app@example.org")
        s.rcpt("never@accept.test")
        code, text = s.data(b"Outpost-Send-At: next tuesday\r\n" + _message("bad schedule"))
    assert code == 550 and text.decode().startswith("5.6.0 Outpost-Send-At must be an RFC 3339"), (code, text)
    status, body = api.call("GET", f"/v1/messages/{mid}")
    assert status == 200 and body["status"] == "scheduled", body
    assert datetime.fromisoformat(body["send_at"].replace("Z", "+00:00")) == at, body
    assert [r["state"] for r in body["recipients"]] == ["scheduled"]
    from outpost.bootstrap import message_store

    store = message_store()
    stored = store.load(mid)
    assert stored is not None and b"Outpost-Send-At" not in store.load_request(stored.meta).raw_bytes()
    status, out = api.call("POST", f"/v1/messages/{mid}/cancel")
    assert status == 200 and [r["status"] for r in out["recipients"]] == ["canceled"], out
