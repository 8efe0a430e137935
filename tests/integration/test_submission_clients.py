"""Real SMTP clients against Outpost's submission server (issue 13): swaks from Debian, and
Debian's Postfix as a relay client (`relayhost`, SASL, verified TLS) delivering through Outpost
to a local MX, where both DKIM signatures verify with the independent verifiers."""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table
from outpost_local.lifecycle import free_port
from outpost_local.postfix import PostfixInstance, postfix_available
from outpost_local.stack import SENDING_DOMAIN, SUBMISSION_HOSTNAME
from outpost_local.verify import have_mail_dkim, have_opendkim, mail_dkim, opendkim_results

pytestmark = pytest.mark.timeout(300)
FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}
QUEUED = re.compile(r"250 2\.0\.0 OK: queued as ([0-9a-z]{26})")


@pytest.fixture(scope="module")
def send_key() -> str:
    return KeyRing(api_keys_table()).create("smtp clients", ["send"], rate=100, burst=200)[0]


def _received(stack: Any, marker: str, timeout: float = 90) -> bytes:
    server = stack.mx["accept.test"].server
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [r for r in server.received if marker.encode() in r.data]
        if got:
            return bytes(got[-1].data)
        time.sleep(0.2)
    raise AssertionError(f"the MX never got {marker}")


def _swaks(stack: Any, key: str, subject: str, *args: str) -> str:
    proc = subprocess.run(
        ["swaks", "--server", stack.config.ip(1), "--tls-verify", "--tls-ca-path", str(stack.pki.ca_bundle),
         "--auth-user", "outpost", "--auth-password", key, "--from", "app@example.org",
         "--to", "ivy@accept.test", "--h-From", f"Shop <shop@{SENDING_DOMAIN}>", "--h-Subject", subject,
         "--body", "Sent with swaks.", *args],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = QUEUED.search(proc.stdout)
    assert m, proc.stdout
    return m.group(1)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed (apt-get install swaks)")
@pytest.mark.parametrize("mode", ["starttls-plain", "tls-on-connect-login"])
def test_swaks_sends_and_the_message_is_delivered(local_stack: Any, api: Any, send_key: str, mode: str) -> None:
    subject = f"swaks {mode} {uuid.uuid4().hex[:8]}"
    ports = local_stack.submission.ports
    if mode == "starttls-plain":
        mid = _swaks(local_stack, send_key, subject, "--port", str(ports["starttls"]), "--tls",
                     "--auth", "PLAIN")
    else:
        mid = _swaks(local_stack, send_key, subject, "--port", str(ports["tls"]), "--tls-on-connect",
                     "--auth", "LOGIN")
    body = api.wait_for(mid, lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
    assert body["status"] == "delivered" and body["subject"] == subject
    assert _received(local_stack, subject).count(b"DKIM-Signature:") == 2


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed (apt-get install swaks)")
def test_swaks_with_a_wrong_key_gets_535(local_stack: Any) -> None:
    proc = subprocess.run(
        ["swaks", "--server", local_stack.config.ip(1), "--port", str(local_stack.submission.ports["starttls"]),
         "--tls", "--tls-verify", "--tls-ca-path", str(local_stack.pki.ca_bundle), "--auth", "PLAIN",
         "--auth-user", "outpost", "--auth-password", "op_not_a_key", "--from", "a@example.org",
         "--to", "ivy@accept.test", "--local-interface", "127.0.9.21"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "535 5.7.8 Authentication credentials invalid" in proc.stdout, proc.stdout


@pytest.fixture(scope="module")
def postfix_client(local_stack: Any, send_key: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = postfix_available()
    if reason is not None:
        pytest.skip(reason)
    host = local_stack.config.ip(40)
    pf = PostfixInstance(tmp_path_factory.mktemp("postfix-client"), host, free_port(host), "client.test",
                         set(), None, hostname="client.test",
                         relay_to=(local_stack.config.ip(1), local_stack.submission.ports["starttls"]),
                         relay_auth=("outpost", send_key), relay_cert_match=SUBMISSION_HOSTNAME,
                         ca_file=Path(local_stack.pki.ca_bundle))
    pf.start()
    yield pf
    pf.stop()


def test_postfix_relayhost_with_sasl_and_tls_delivers_through_outpost(
        local_stack: Any, api: Any, postfix_client: Any) -> None:
    subject = f"via Postfix {uuid.uuid4().hex[:8]}"
    data = (f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: judy@accept.test\r\nSubject: {subject}\r\n"
            "\r\nRelayed by Postfix.\r\n").encode()
    with smtplib.SMTP(postfix_client.host, postfix_client.port, timeout=60) as s:
        s.sendmail("app@client.test", ["judy@accept.test"], data)
    deadline = time.monotonic() + 90
    found = None
    while found is None and time.monotonic() < deadline:
        found = QUEUED.search(postfix_client.log_file.read_text(errors="replace"))
        time.sleep(0.2)
    log = postfix_client.log_file.read_text(errors="replace")
    assert found, f"Postfix did not relay it:\n{log[-3000:]}\n{postfix_client.queue()}"
    # Postfix verified the certificate (secure level) and authenticated with the key.
    assert re.search(r"Verified TLS connection established to \S+\[" + re.escape(local_stack.config.ip(1)), log), log
    mid = found.group(1)
    body = api.wait_for(mid, lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
    assert body["status"] == "delivered" and body["subject"] == subject
    postfix_client.delivered_message = _received(local_stack, subject)


@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")
def test_postfix_relayed_message_dkim_verifies_with_opendkim(local_stack: Any, postfix_client: Any) -> None:
    msg = getattr(postfix_client, "delivered_message", None)
    assert msg is not None, "runs after the delivery test"
    results = opendkim_results(local_stack.dns.host, local_stack.dns.port, msg)
    assert [r["result"] for r in results] == ["pass", "pass"], results


@pytest.mark.skipif(not have_mail_dkim(), reason="libmail-dkim-perl not installed")
def test_postfix_relayed_message_dkim_verifies_with_mail_dkim(local_stack: Any, postfix_client: Any) -> None:
    msg = getattr(postfix_client, "delivered_message", None)
    assert msg is not None, "runs after the delivery test"
    sigs, overall = mail_dkim(local_stack.dns.host, local_stack.dns.port, msg)
    assert overall == "pass" and any(s.result == "pass" for s in sigs), sigs


def test_the_container_entrypoint_serves_with_the_certificate_from_secrets_manager(
        local_stack: Any, api: Any, send_key: str) -> None:
    """`python -m outpost.submission` as the ECS task runs it: settings from the environment
    (the send API's tables, queue and bucket; OUTPOST_SUBMISSION_*), the certificate read from
    Secrets Manager (the secret the local stack wrote), SIGTERM ends it cleanly."""
    import os
    import signal
    import ssl
    import sys

    host = local_stack.config.ip(1)
    env = {**os.environ, **local_stack.env, "OUTPOST_SUBMISSION_HOST": host,
           "OUTPOST_SUBMISSION_STARTTLS_PORT": str(free_port(host)), "OUTPOST_SUBMISSION_TLS_PORT": "0",
           "OUTPOST_SUBMISSION_TLS_SECRET": "outpost/submission-tls",
           "OUTPOST_SUBMISSION_HOSTNAME": SUBMISSION_HOSTNAME}
    # stdout: the one "listening" line (logs go to stderr)
    proc = subprocess.Popen([sys.executable, "-m", "outpost.submission"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"STARTTLS (\d+), TLS (\d+)", line)
        assert m and m.group(1) == env["OUTPOST_SUBMISSION_STARTTLS_PORT"], line
        ctx = ssl.create_default_context(cafile=str(local_stack.pki.ca_bundle))
        with smtplib.SMTP_SSL(host, int(m.group(2)), context=ctx, timeout=60) as s:
            s.login("outpost", send_key)
            s.mail("app@example.org")
            s.rcpt("kim@accept.test")
            code, text = s.data(f"From: shop@{SENDING_DOMAIN}\r\nSubject: from the container\r\n\r\nhi\r\n".encode())
        found = QUEUED.search(f"{code} {text.decode()}")
        assert found, (code, text)
        status, body = api.call("GET", f"/v1/messages/{found.group(1)}")
        assert status == 200 and body["recipients"][0]["address"] == "kim@accept.test"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
