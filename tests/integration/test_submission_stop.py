"""The submission server as the ECS task runs it (`python -m outpost.submission`, a real process
on the local stack): how it stops on SIGTERM (issue 13; drain.py) and what the Network Load
Balancer's TCP health checks (connect, then close without a byte) do to it.

Stop: new connections refused at once; an idle session gets `421 4.3.2 Service shutting down`
and the process exits 0 within seconds; a DATA under way finishes (250 with an id, the message
queryable) before the 421 and the exit; past the drain time a stalled DATA gets the 421 too.

The server runs on this interpreter, or on OUTPOST_SUBMISSION_TEST_PYTHON (a python3.12 with
aiosmtpd and boto3: the task's Python, whose asyncio.Server.wait_closed() waits for every
connection), the library taken from this checkout.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table
from outpost_local.lifecycle import free_port
from outpost_local.stack import SENDING_DOMAIN, SUBMISSION_HOSTNAME

pytestmark = pytest.mark.timeout(300)
QUEUED = re.compile(r"^2\.0\.0 .*queued as ([0-9a-z]{26})$")
SHUTTING_DOWN = (421, b"4.3.2 Service shutting down")
LAYER = Path(__file__).resolve().parents[2] / "layers/outpost"


class Server:
    """One `python -m outpost.submission` process; its log (stderr) in `log`."""

    def __init__(self, stack: Any, log: Path, **env: str) -> None:
        self.host, self.log = stack.config.ip(1), log
        full = {**os.environ, **stack.env, "OUTPOST_SUBMISSION_HOST": self.host,
                "OUTPOST_SUBMISSION_STARTTLS_PORT": str(free_port(self.host)),
                "OUTPOST_SUBMISSION_TLS_PORT": str(free_port(self.host)),
                "OUTPOST_SUBMISSION_TLS_SECRET": "outpost/submission-tls",
                "OUTPOST_SUBMISSION_HOSTNAME": SUBMISSION_HOSTNAME, **env,
                "PYTHONPATH": os.pathsep.join(p for p in (str(LAYER), os.environ.get("PYTHONPATH")) if p)}
        with log.open("wb") as err:
            python = os.environ.get("OUTPOST_SUBMISSION_TEST_PYTHON") or sys.executable
            self.proc = subprocess.Popen([python, "-m", "outpost.submission"], env=full,
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the one "listening" line, once both ports are bound
        m = re.search(r"STARTTLS (\d+), TLS (\d+)", line)
        assert m, (line, log.read_text())
        self.starttls, self.tls = int(m.group(1)), int(m.group(2))
        self.ctx = ssl.create_default_context(cafile=str(stack.pki.ca_bundle))

    def session(self, key: str | None, *, implicit: bool = False, source: str | None = None) -> smtplib.SMTP:
        src = (source, 0) if source else None
        if implicit:
            s: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.tls, context=self.ctx, timeout=60,
                                               source_address=src)
        else:
            s = smtplib.SMTP(self.host, self.starttls, timeout=60, source_address=src)
            s.starttls(context=self.ctx)
        s.ehlo("client.test")
        if key is not None:
            s.login("outpost", key)
        return s

    def refuses(self, port: int) -> bool:
        try:
            socket.create_connection((self.host, port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    def sigterm(self) -> float:
        self.proc.send_signal(signal.SIGTERM)
        return time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def send_key() -> str:
    return KeyRing(api_keys_table()).create("smtp stop", ["send"], rate=100, burst=200)[0]


@pytest.fixture
def server_factory(local_stack: Any, tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def make(**env: str) -> Server:
        started.append(Server(local_stack, tmp_path / f"server{len(started)}.log", **env))
        return started[-1]

    yield make
    for s in started:
        s.stop()


def _begin_data(s: smtplib.SMTP, subject: str) -> bytes:
    """MAIL, RCPT, DATA (354) and the first half of a message; returns the second half."""
    assert s.mail("app@example.org")[0] == 250
    assert s.rcpt("lee@accept.test")[0] == 250
    assert s.docmd("DATA")[0] == 354
    s.send(f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: lee@accept.test\r\nSubject: {subject}\r\n".encode())
    return b"\r\nSent while the server was stopping.\r\n.\r\n"


def test_sigterm_with_idle_sessions_exits_at_once_and_each_client_sees_421(server_factory: Any, send_key: str) -> None:
    server = server_factory()  # the default drain time, 100 s: an idle session must not wait for it
    clients = [server.session(send_key), server.session(send_key, implicit=True),
               smtplib.SMTP(server.host, server.starttls, timeout=60)]  # the last: plaintext, before EHLO
    t0 = server.sigterm()
    for c in clients:
        assert c.getreply() == SHUTTING_DOWN
        c.close()
    assert server.proc.wait(timeout=30) == 0
    took = time.monotonic() - t0
    assert took < 15, took  # in practice well under a second (the report's measure)
    assert server.refuses(server.starttls) and server.refuses(server.tls)


def test_a_data_under_way_finishes_after_sigterm_then_the_process_exits(
        server_factory: Any, send_key: str, api: Any) -> None:
    server = server_factory()
    busy, idle = server.session(send_key), server.session(send_key, implicit=True)
    subject = f"stopping {uuid.uuid4().hex[:8]}"
    rest = _begin_data(busy, subject)
    server.sigterm()
    assert idle.getreply() == SHUTTING_DOWN  # the idle one goes at once, the DATA stays
    idle.close()
    deadline = time.monotonic() + 30
    while not (server.refuses(server.starttls) and server.refuses(server.tls)):
        assert time.monotonic() < deadline, "the listeners stayed open after SIGTERM"
        time.sleep(0.1)
    time.sleep(1.0)
    assert server.proc.poll() is None, "exited with a DATA under way"
    busy.send(rest)
    code, text = busy.getreply()
    m = QUEUED.match(text.decode())
    assert code == 250 and m, (code, text)
    assert busy.getreply() == SHUTTING_DOWN  # told right after its 250
    busy.close()
    assert server.proc.wait(timeout=30) == 0
    status, body = api.call("GET", f"/v1/messages/{m.group(1)}")
    assert status == 200 and body["subject"] == subject, body
    assert body["recipients"][0]["address"] == "lee@accept.test"


def test_past_the_drain_time_a_stalled_data_gets_421_and_the_process_exits(server_factory: Any, send_key: str) -> None:
    server = server_factory(OUTPOST_SUBMISSION_DRAIN_SECONDS="3")
    stalled = server.session(send_key)
    _begin_data(stalled, "never finished")
    t0 = server.sigterm()
    assert stalled.getreply() == SHUTTING_DOWN
    waited = time.monotonic() - t0
    stalled.close()
    assert server.proc.wait(timeout=30) == 0
    assert 2.5 <= waited < 20, waited  # the drain time, not before it


def _health_check(host: str, port: int, source: str, *, reset: bool) -> None:
    """What an NLB TCP health check does: the handshake, then close (FIN) or reset (RST)."""
    s = socket.socket()
    s.bind((source, 0))
    s.connect((host, port))
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_health_checks_leave_no_trace_in_limits_lockout_or_error_logs(server_factory: Any, send_key: str) -> None:
    server = server_factory()
    nlb = "127.0.9.41"  # the health checker's address, used by nothing else
    time.sleep(1.0)
    before = server.log.read_text(errors="replace")
    for i in range(40):
        for port in (server.starttls, server.tls):
            _health_check(server.host, port, nlb, reset=i % 2 == 1)
    time.sleep(1.0)
    # Not a line for them (aiosmtpd's per-connection INFO lines are off in the container).
    assert server.log.read_text(errors="replace") == before
    # All 20 connections an address may hold are still free (the checks left no count behind),
    # and the limit itself still holds: the 21st is refused.
    held = [smtplib.SMTP(server.host, server.starttls, timeout=60, source_address=(nlb, 0)) for _ in range(20)]
    extra = socket.create_connection((server.host, server.starttls), timeout=30, source_address=(nlb, 0))
    assert extra.recv(200).startswith(b"421 4.7.0"), "the per-address limit let a 21st connection in"
    extra.close()
    for c in held:
        c.close()
    # The checks are no AUTH failures: 4 wrong keys (the lockout takes 5), then the right one.
    wrong = base64.b64encode(b"\0outpost\0op_wrong_key").decode()
    with server.session(None, source=nlb) as s:
        for _ in range(4):
            assert s.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
    server.session(send_key, source=nlb).quit()
    server.sigterm()
    assert server.proc.wait(timeout=30) == 0
    log = server.log.read_text(errors="replace")
    bad = [line for line in log.splitlines() if re.search(r" (ERROR|CRITICAL) |Traceback", line)]
    assert not bad, "\n".join(bad)
    assert "submission stopped" in log  # the log was written, so its silence means something
