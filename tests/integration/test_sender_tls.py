"""TLS towards MX hosts (issue 8 item 20), against real aiosmtpd MX hosts with real STARTTLS:
a server limited to TLS 1.0 or 1.1 still gets encrypted mail when TLS is opportunistic or
required (a permissive retry before plaintext, as Postfix's "may" and "encrypt" levels do), and
`"tls": "verified"` delivers only to an MX with a valid certificate for its name."""

from __future__ import annotations

import asyncio
import ssl
import time
import warnings

import pytest
from sender_rig import PREFIX, Rig, commands

from outpost.delivery.transport import SmtpConnector, Timeouts
from outpost.delivery.trouble import Outcome, Scope, judge
from outpost.errors import StageError
from outpost_local.mx import MxServer, Slow, TlsHandshakeFailure

pytestmark = pytest.mark.timeout(120)

OLD = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}


def _old_tls_mx(rig: Rig, domain: str, n: int, version: str) -> MxServer:
    """An MX whose TLS stops at TLS 1.0 or 1.1 (an old appliance). OpenSSL 3 needs security
    level 0 on both sides for these versions (no SHA-1-free signature algorithm)."""
    name = f"mx{n}.{domain}"
    ctx = rig.pki.server_context(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = OLD[version]
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server = MxServer(f"{PREFIX}.{n}", rig.smtp_port, None, ctx, hostname=name)
    server.start()
    rig.servers.append(server)
    rig.dns.add(domain, "MX", (10, name))
    rig.dns.add(name, "A", f"{PREFIX}.{n}")
    return server


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
@pytest.mark.parametrize("mode", ["opportunistic", "required"])
def test_a_tls_1_0_or_1_1_server_still_gets_encrypted_mail(rig: Rig, version: str, mode: str) -> None:
    mx = _old_tls_mx(rig, "old.test", 2, version)
    mid = rig.send("amy@old.test", tls=mode)
    rig.run(mid)
    [got] = mx.wait_for(1)
    assert got.tls  # encrypted, not plaintext after the failed TLS 1.2 handshake
    r = rig.rcpt(mid)
    assert r["state"] == "delivered"
    assert r["attempts"][0]["tls"]["version"] == version
    assert r["attempts"][0]["tls"]["verified"] is False  # the permissive context does not verify
    assert len(commands(mx, "STARTTLS")) == 2  # TLS 1.2+ first, then the permissive retry


def test_verified_refuses_a_tls_1_0_server(rig: Rig) -> None:
    mx = _old_tls_mx(rig, "old.test", 2, "TLSv1")
    mid = rig.send("bea@old.test", tls="verified")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    assert (r["last"]["command"], r["last"]["status"]) == ("STARTTLS", "4.7.5")
    assert mx.received == [] and commands(mx, "MAIL") == []


def test_a_server_whose_tls_always_fails_still_gets_plaintext_when_opportunistic(rig: Rig) -> None:
    mx = rig.mx("badtls.test", 2, TlsHandshakeFailure())
    mid = rig.send("cai@badtls.test")
    rig.run(mid)
    [got] = mx.wait_for(1)
    assert not got.tls and rig.rcpt(mid)["state"] == "delivered"
    assert len(commands(mx, "STARTTLS")) == 2 and len(mx.replies("CONNECT")) == 3
    req = rig.send("cai@badtls.test", tls="required")  # never plaintext, even after both tries
    rig.run(req)
    assert (rig.rcpt(req)["state"], rig.rcpt(req)["last"]["status"]) == ("deferred", "4.7.5")
    assert len(mx.received) == 1


@pytest.mark.parametrize("cert", ["untrusted", "wrong_name", "expired"])
def test_verified_defers_without_a_valid_certificate_for_the_mx_name(rig: Rig, cert: str) -> None:
    name = "mx2.strict.test"
    ctx = {"untrusted": lambda: rig.pki.untrusted_server_context(name),
           "wrong_name": lambda: rig.pki.server_context("mx.somebody-else.test"),
           "expired": lambda: rig.pki.expired_server_context(name)}[cert]()
    mx = MxServer(f"{PREFIX}.2", rig.smtp_port, None, ctx, hostname=name)
    mx.start()
    rig.servers.append(mx)
    rig.dns.add("strict.test", "MX", (10, name))
    rig.dns.add(name, "A", f"{PREFIX}.2")
    mid = rig.send("dan@strict.test", tls="verified")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    a = r["attempts"][0]
    assert (a["command"], a["status"]) == ("STARTTLS", "4.7.5") and "did not verify" in a["text"]
    assert mx.received == [] and commands(mx, "MAIL") == []
    # "required" takes the same server (encrypted, recorded unverified): the difference.
    ok = rig.send("dan@strict.test", tls="required")
    rig.run(ok)
    assert rig.rcpt(ok)["state"] == "delivered"
    assert rig.rcpt(ok)["attempts"][0]["tls"]["verified"] is False and mx.wait_for(1)[0].tls


def test_verified_delivers_with_a_valid_certificate(rig: Rig) -> None:
    mx = rig.mx("strict.test", 2)  # the test CA, the MX's own name
    mid = rig.send("eve@strict.test", tls="verified")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered"
    assert r["attempts"][0]["tls"]["verified"] is True and r["attempts"][0]["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert mx.wait_for(1)[0].tls


def test_no_fallback_reconnect_starts_past_the_callers_budget(rig: Rig) -> None:
    mx = rig.mx("badtls.test", 2, [Slow("STARTTLS", 0.6), TlsHandshakeFailure()])
    t = Timeouts(connect=1, command=1, end_of_data=1)  # a (re)connect needs 1 + 3 x 1 = 4 s
    connector = SmtpConnector("mta.sender.test", port=rig.smtp_port, ca_bundle=str(rig.pki.ca_bundle), timeouts=t)
    with pytest.raises(StageError) as none:
        asyncio.run(connector.open("mx2.badtls.test", f"{PREFIX}.2", budget=0.9))  # a connect needs 1 s
    assert mx.replies("CONNECT") == []  # not even the first connect
    start = time.monotonic()
    with pytest.raises(StageError) as exc:
        asyncio.run(connector.open("mx2.badtls.test", f"{PREFIX}.2", budget=4.5))
    assert time.monotonic() - start < 3.5  # well short of a reconnect's 4 s
    # The first handshake failed after 0.6 s; 3.9 s were left, a reconnect needs 4.
    assert len(mx.replies("CONNECT")) == 1
    assert "no time left for a permissive TLS retry" in str(exc.value)
    v = judge(exc.value)
    assert (v.outcome, v.scope, v.command) == (Outcome.TRANSIENT, Scope.HOST, "STARTTLS")
    assert "no time left for a connection" in str(none.value)


def test_the_permissive_context_is_really_permissive() -> None:
    from outpost.delivery.transport import legacy_tls_context

    ctx = legacy_tls_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1 and ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname
