"""Outpost's DKIM signatures checked by verifiers that share no code with dkimpy.

* Perl's Mail::DKIM (Debian libmail-dkim-perl): RSA only here; it reports an Ed25519
  signature as "invalid (unsupported algorithm)" unless CryptX is installed, which is
  exactly the receiver RFC 8463 §6 has in mind when it says to sign with both.
* OpenDKIM 2.11 (``opendkim -t``): RSA and Ed25519.

Both fetch the public keys over real DNS from a dnslib server on loopback serving a
test zone. OpenDKIM is built with libunbound, so ``ResolverConfiguration`` names an
unbound config file that forwards every query to that server (``Nameservers`` takes
addresses only, no port, and so would need port 53 and root); TestPublicKeys is not
used, so OpenDKIM does its own DNS lookups and TXT parsing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from outpost.signing import DkimKey, Signer, dns_name, dns_txt_strings, generate_key

HERE = Path(__file__).resolve().parent
VERIFY_PL = HERE / "verify_dkim.pl"
DOMAIN = "outpost-test.example"


def _perl_has_mail_dkim() -> bool:
    if shutil.which("perl") is None:
        return False
    probe = ["perl", "-MMail::DKIM::Verifier", "-MNet::DNS::Resolver", "-e", "1"]
    return subprocess.run(probe, capture_output=True).returncode == 0


needs_perl = pytest.mark.skipif(
    not _perl_has_mail_dkim(),
    reason="perl with Mail::DKIM and Net::DNS not installed (apt-get install libmail-dkim-perl)",
)
needs_opendkim = pytest.mark.skipif(
    shutil.which("opendkim") is None, reason="opendkim not installed (apt-get install opendkim)"
)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- test DNS server


@dataclass
class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers TXT queries from a dict; NXDOMAIN for unknown names. Records the queries."""

    records: dict[str, list[str]]
    queries: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        with self.lock:
            self.queries.append(qname)
        strings = self.records.get(qname)
        if strings is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            # One TXT RR made of several <=255-octet strings, as a 2048-bit key needs.
            rdata = TXT([s.encode("ascii") for s in strings])
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=rdata, ttl=60))
        return reply  # NOERROR, no data: the name exists but has no record of that type


@dataclass
class LocalDns:
    host: str
    port: int
    resolver: ZoneResolver


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return generate_key(DOMAIN, "rsa2026"), generate_key(DOMAIN, "ed2026", "ed25519-sha256")


@pytest.fixture(scope="module")
def dns(keys: tuple[DkimKey, DkimKey]) -> Iterator[LocalDns]:
    resolver = ZoneResolver({dns_name(k): dns_txt_strings(k) for k in keys})
    quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
    host = "127.0.0.1"
    # UDP on an ephemeral port, then TCP on the same number (for truncated answers).
    for _ in range(20):
        udp = DNSServer(resolver, address=host, port=0, logger=quiet)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address=host, port=port, tcp=True, logger=quiet)
        except OSError:
            udp.server.server_close()
            continue
        break
    else:  # pragma: no cover - 20 port collisions in a row
        pytest.fail("could not bind UDP and TCP on one port")
    udp.start_thread()
    tcp.start_thread()
    try:
        yield LocalDns(host, port, resolver)
    finally:
        for server in (udp, tcp):
            server.stop()
            server.server.server_close()


def test_dns_fixture_serves_the_key_records(dns: LocalDns, keys: tuple[DkimKey, DkimKey]) -> None:
    # A raw query over UDP: the fixture is a real DNS server, not a function call.
    query = DNSRecord.question(dns_name(keys[0]), "TXT")
    answer = DNSRecord.parse(query.send(dns.host, dns.port, timeout=5))
    assert b"".join(answer.rr[0].rdata.data).decode() == "".join(dns_txt_strings(keys[0]))
    tcp_answer = DNSRecord.parse(query.send(dns.host, dns.port, tcp=True, timeout=5))
    assert tcp_answer.rr[0].rdata.data == answer.rr[0].rdata.data
    missing = DNSRecord.question("nothing._domainkey." + DOMAIN, "TXT")
    assert DNSRecord.parse(missing.send(dns.host, dns.port, timeout=5)).header.rcode == (
        RCODE.NXDOMAIN
    )


# --------------------------------------------------------------------------- messages


MESSAGE = (
    b"From: Outpost Test <noreply@" + DOMAIN.encode() + b">\r\n"
    b"To: Someone <someone@example.org>\r\n"
    b"Subject: Your receipt for order 123456, which has a subject long enough to\r\n"
    b" be folded\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <abc123@" + DOMAIN.encode() + b">\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://" + DOMAIN.encode() + b"/u/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"\r\n"
    b"Thanks for your order.   \r\n"
    b"\r\n"
    b"Caf\xc3\xa9 cr\xc3\xa8me\t\tbr\xc3\xbbl\xc3\xa9e\r\n"
    b"\r\n\r\n"
)


@pytest.fixture(scope="module")
def signed(keys: tuple[DkimKey, DkimKey]) -> bytes:
    return Signer(list(keys)).sign(MESSAGE) + MESSAGE


def _write(tmp_path: Path, data: bytes, name: str = "message.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- Mail::DKIM


@dataclass(frozen=True)
class PerlResult:
    result: str
    algorithm: str
    domain: str
    selector: str
    detail: str


def mail_dkim(dns: LocalDns, path: Path) -> tuple[list[PerlResult], str]:
    proc = subprocess.run(
        ["perl", str(VERIFY_PL), dns.host, str(dns.port), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    sigs, overall = [], ""
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "overall":
            overall = parts[1]
        else:
            sigs.append(PerlResult(*parts))
    return sigs, overall


@needs_perl
def test_mail_dkim_passes_rsa(dns: LocalDns, signed: bytes, tmp_path: Path) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, signed))
    assert overall == "pass"
    by_alg = {s.algorithm: s for s in sigs}
    assert set(by_alg) == {"rsa-sha256", "ed25519-sha256"}
    rsa = by_alg["rsa-sha256"]
    assert (rsa.result, rsa.domain, rsa.selector) == ("pass", DOMAIN, "rsa2026"), rsa
    # Without CryptX, Mail::DKIM cannot check Ed25519: it must say so, not "fail".
    ed = by_alg["ed25519-sha256"]
    assert ed.result == "pass" or "unsupported algorithm" in ed.detail, ed
    assert "rsa2026._domainkey." + DOMAIN in dns.resolver.queries


@needs_perl
def test_mail_dkim_lf_file(dns: LocalDns, signed: bytes, tmp_path: Path) -> None:
    # The same signed message stored with LF line ends (as on disk) still verifies.
    sigs, _ = mail_dkim(dns, _write(tmp_path, signed.replace(b"\r\n", b"\n")))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["pass"]


@needs_perl
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Thanks for", b"Thanks 4"), id="body"),
        pytest.param(lambda m: m.replace(b"order 123456", b"order 654321"), id="subject"),
        pytest.param(lambda m: m.replace(b"List-Unsubscribe-Post:", b"X-Dropped:"), id="one-click"),
    ],
)
def test_mail_dkim_fails_tampered(
    dns: LocalDns, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, tamper(signed)))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["fail"]
    assert overall != "pass"


# --------------------------------------------------------------------------- OpenDKIM


def opendkim(dns: LocalDns, path: Path, tmp_path: Path) -> list[dict[str, str]]:
    """Run ``opendkim -t`` and return the dkim= results of its Authentication-Results."""
    unbound = tmp_path / "unbound.conf"
    unbound.write_text(
        "server:\n"
        # libunbound refuses to query 127.0.0.0/8 by default.
        "  do-not-query-localhost: no\n"
        "forward-zone:\n"
        '  name: "."\n'
        f"  forward-addr: {dns.host}@{dns.port}\n"
    )
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nResolverConfiguration {unbound}\n")
    # -t always exits 0; -vvv prints the Authentication-Results field it would add, which
    # has one dkim= result per signature (the summary line names only the first).
    proc = subprocess.run(
        ["opendkim", "-x", str(conf), "-vvv", "-t", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"hname='Authentication-Results' hvalue='([^']*)'", proc.stdout)
    assert m, f"no Authentication-Results in opendkim output:\n{proc.stdout}\n{proc.stderr}"
    results = []
    # Drop RFC 5322 comments first: "(2048-bit key; unprotected)" holds a semicolon.
    for clause in re.sub(r"\([^)]*\)", "", m.group(1)).split(";"):
        r = re.match(r"\s*dkim=(\w+)", clause)
        if r:
            tags = dict(re.findall(r"header\.(\w+)=(\S+)", clause))
            results.append({"result": r.group(1), **tags})
    return results


@needs_opendkim
def test_opendkim_passes_rsa_and_ed25519(dns: LocalDns, signed: bytes, tmp_path: Path) -> None:
    results = opendkim(dns, _write(tmp_path, signed), tmp_path)
    by_alg = {r["a"]: r for r in results}
    assert set(by_alg) == {"rsa-sha256", "ed25519-sha256"}, results
    for alg, selector in (("rsa-sha256", "rsa2026"), ("ed25519-sha256", "ed2026")):
        assert by_alg[alg]["result"] == "pass", results
        assert by_alg[alg]["s"] == selector and by_alg[alg]["d"] == DOMAIN
    assert "ed2026._domainkey." + DOMAIN in dns.resolver.queries


@needs_opendkim
def test_opendkim_rsa_only_signer(
    dns: LocalDns, keys: tuple[DkimKey, DkimKey], tmp_path: Path
) -> None:
    signed = Signer([keys[0]]).sign(MESSAGE) + MESSAGE
    results = opendkim(dns, _write(tmp_path, signed), tmp_path)
    assert [(r["a"], r["result"]) for r in results] == [("rsa-sha256", "pass")]


@needs_opendkim
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Thanks for", b"Thanks 4"), id="body"),
        pytest.param(lambda m: m.replace(b"noreply@", b"billing@"), id="from"),
    ],
)
def test_opendkim_fails_tampered(
    dns: LocalDns, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    results = opendkim(dns, _write(tmp_path, tamper(signed)), tmp_path)
    assert {r["a"]: r["result"] for r in results} == {
        "rsa-sha256": "fail",
        "ed25519-sha256": "fail",
    }, results


@needs_opendkim
def test_opendkim_prepended_from_fails_because_from_is_oversigned(
    dns: LocalDns, signed: bytes, tmp_path: Path
) -> None:
    # Verifiers take header instances bottom-up (RFC 6376 §5.4.2), so a From inserted
    # *above* the signed one is not covered by a single "from" in h=; displayed by most
    # clients, it would ride on a valid signature. The extra "from" in h= makes it count.
    # (Checked: with OVERSIGNED_HEADERS = () OpenDKIM reports pass here.)
    tampered = signed.replace(b"From: Outpost", b"From: attacker@evil.example\r\nFrom: Outpost")
    results = opendkim(dns, _write(tmp_path, tampered), tmp_path)
    assert [r["result"] for r in results] == ["fail", "fail"], results


@needs_opendkim
def test_opendkim_unknown_selector_is_not_a_pass(dns: LocalDns, tmp_path: Path) -> None:
    # A key that is not in the zone: the verifier really looks the key up in our DNS.
    stray = generate_key(DOMAIN, "notpublished")
    signed = Signer([stray]).sign(MESSAGE) + MESSAGE
    results = opendkim(dns, _write(tmp_path, signed), tmp_path)
    assert results and all(r["result"] != "pass" for r in results), results
    assert "notpublished._domainkey." + DOMAIN in dns.resolver.queries
