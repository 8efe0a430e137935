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

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from outpost.signing import DkimKey, Signer, dns_name, dns_txt_strings, generate_key
from outpost_local.dns import DnsServer
from outpost_local.verify import dkimpy_results, have_mail_dkim, have_opendkim, opendkim_results
from outpost_local.verify import mail_dkim as _mail_dkim

DOMAIN = "outpost-test.example"

needs_perl = pytest.mark.skipif(
    not have_mail_dkim(),
    reason="perl with Mail::DKIM and Net::DNS not installed (apt-get install libmail-dkim-perl)",
)
needs_opendkim = pytest.mark.skipif(
    not have_opendkim(), reason="opendkim not installed (apt-get install opendkim)"
)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- test DNS server


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return generate_key(DOMAIN, "rsa2026"), generate_key(DOMAIN, "ed2026", "ed25519-sha256")


@pytest.fixture(scope="module")
def dns(keys: tuple[DkimKey, DkimKey]) -> Iterator[DnsServer]:
    """The project's real DNS server (UDP and TCP on one port), serving the key records."""
    with DnsServer("127.0.0.1", 0) as server:
        for k in keys:
            server.add(dns_name(k), "TXT", tuple(dns_txt_strings(k)))
        yield server


def _queried(dns: DnsServer) -> set[str]:
    return {q.name.rstrip(".").lower() for q in dns.queries}


def test_dns_fixture_serves_the_key_records(dns: DnsServer, keys: tuple[DkimKey, DkimKey]) -> None:
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


def mail_dkim(dns: DnsServer, path: Path):  # type: ignore[no-untyped-def]
    return _mail_dkim(dns.host, dns.port, path.read_bytes())


@needs_perl
def test_mail_dkim_passes_rsa(dns: DnsServer, signed: bytes, tmp_path: Path) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, signed))
    assert overall == "pass"
    by_alg = {s.algorithm: s for s in sigs}
    assert set(by_alg) == {"rsa-sha256", "ed25519-sha256"}
    rsa = by_alg["rsa-sha256"]
    assert (rsa.result, rsa.domain, rsa.selector) == ("pass", DOMAIN, "rsa2026"), rsa
    # Without CryptX, Mail::DKIM cannot check Ed25519: it must say so, not "fail".
    ed = by_alg["ed25519-sha256"]
    assert ed.result == "pass" or "unsupported algorithm" in ed.detail, ed
    assert "rsa2026._domainkey." + DOMAIN in _queried(dns)


@needs_perl
def test_mail_dkim_lf_file(dns: DnsServer, signed: bytes, tmp_path: Path) -> None:
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
    dns: DnsServer, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, tamper(signed)))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["fail"]
    assert overall != "pass"


# --------------------------------------------------------------------------- OpenDKIM


def opendkim(dns: DnsServer, path: Path, tmp_path: Path) -> list[dict[str, str]]:
    """OpenDKIM's -t verdicts, one dict per signature."""
    return opendkim_results(dns.host, dns.port, path.read_bytes())


@needs_opendkim
def test_opendkim_passes_rsa_and_ed25519(dns: DnsServer, signed: bytes, tmp_path: Path) -> None:
    results = opendkim(dns, _write(tmp_path, signed), tmp_path)
    by_alg = {r["a"]: r for r in results}
    assert set(by_alg) == {"rsa-sha256", "ed25519-sha256"}, results
    for alg, selector in (("rsa-sha256", "rsa2026"), ("ed25519-sha256", "ed2026")):
        assert by_alg[alg]["result"] == "pass", results
        assert by_alg[alg]["s"] == selector and by_alg[alg]["d"] == DOMAIN
    assert "ed2026._domainkey." + DOMAIN in _queried(dns)


@needs_opendkim
def test_opendkim_rsa_only_signer(
    dns: DnsServer, keys: tuple[DkimKey, DkimKey], tmp_path: Path
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
    dns: DnsServer, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    results = opendkim(dns, _write(tmp_path, tamper(signed)), tmp_path)
    assert {r["a"]: r["result"] for r in results} == {
        "rsa-sha256": "fail",
        "ed25519-sha256": "fail",
    }, results


@needs_opendkim
def test_opendkim_prepended_from_fails_because_from_is_oversigned(
    dns: DnsServer, signed: bytes, tmp_path: Path
) -> None:
    # Verifiers take header instances bottom-up (RFC 6376 §5.4.2), so a From inserted
    # *above* the signed one is not covered by a single "from" in h=; displayed by most
    # clients, it would ride on a valid signature. The extra "from" in h= makes it count.
    # (Checked: with OVERSIGNED_HEADERS = () OpenDKIM reports pass here.)
    tampered = signed.replace(b"From: Outpost", b"From: attacker@evil.example\r\nFrom: Outpost")
    results = opendkim(dns, _write(tmp_path, tampered), tmp_path)
    assert [r["result"] for r in results] == ["fail", "fail"], results


@needs_opendkim
def test_opendkim_unknown_selector_is_not_a_pass(dns: DnsServer, tmp_path: Path) -> None:
    # A key that is not in the zone: the verifier really looks the key up in our DNS.
    stray = generate_key(DOMAIN, "notpublished")
    signed = Signer([stray]).sign(MESSAGE) + MESSAGE
    results = opendkim(dns, _write(tmp_path, signed), tmp_path)
    assert results and all(r["result"] != "pass" for r in results), results
    assert "notpublished._domainkey." + DOMAIN in _queried(dns)


# --------------------------------------------------------------------------- over-signing

# Fields added to a signed message in transit (RFC 6376 §8.15): a Reply-To it did not have,
# a second Subject above the signed one (clients show the topmost; verifiers take instances
# bottom-up, §5.4.2), a Cc it did not have. MESSAGE has no Reply-To and no Cc.
ALTERATIONS = [
    pytest.param(lambda m: b"Reply-To: attacker@evil.example\r\n" + m, id="prepended-reply-to"),
    pytest.param(lambda m: b"Subject: Urgent: confirm your password\r\n" + m, id="second-subject"),
    pytest.param(
        lambda m: m.replace(b"\r\n\r\n", b"\r\nCc: attacker@evil.example\r\n\r\n", 1), id="added-cc"
    ),
]


def _above_signatures(signed: bytes, tamper: Callable[[bytes], bytes]) -> bytes:
    """Apply `tamper` to the message under the DKIM-Signature fields (as a relay would)."""
    start = signed.index(b"From: ")
    return signed[:start] + tamper(signed[start:])


@needs_perl
@pytest.mark.parametrize("tamper", ALTERATIONS)
def test_mail_dkim_fails_an_added_field(
    dns: DnsServer, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, signed))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["pass"]  # intact
    sigs, overall = mail_dkim(dns, _write(tmp_path, _above_signatures(signed, tamper)))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["fail"], sigs
    assert overall != "pass"


@needs_opendkim
@pytest.mark.parametrize("tamper", ALTERATIONS)
def test_opendkim_fails_an_added_field(
    dns: DnsServer, signed: bytes, tmp_path: Path, tamper: Callable[[bytes], bytes]
) -> None:
    intact = opendkim(dns, _write(tmp_path, signed), tmp_path)
    assert {r["a"]: r["result"] for r in intact} == {
        "rsa-sha256": "pass",
        "ed25519-sha256": "pass",
    }, intact
    results = opendkim(dns, _write(tmp_path, _above_signatures(signed, tamper)), tmp_path)
    assert {r["a"]: r["result"] for r in results} == {
        "rsa-sha256": "fail",
        "ed25519-sha256": "fail",
    }, results


# --------------------------------------------------------------------------- large messages

# The signer hashes the body in BODY_CHUNK pieces (issue 8 item 13). Two multi-MB messages:
# one as the sender builds it (MIME, an attachment base64-encoded straight into the output,
# a whitespace-heavy text part), one whose body puts the hard cases on the piece boundaries:
# a CR ending one piece and its LF starting the next, a WSP run across a boundary before a
# CRLF, tabs and runs inside lines, and many empty lines at the end spanning pieces.


def _mime_message() -> bytes:
    import os

    from outpost.mime import build_message
    from outpost.models import SendRequest

    text = "Trailing blanks \t  \n" * 20_000 + "tabs\t\tinside  and   runs \n" * 20_000 + "\n" * 3000
    req = SendRequest.model_validate({
        "from": f"Outpost Test <noreply@{DOMAIN}>", "to": ["someone@example.org"], "subject": "Big one",
        "text": text, "attachments": [{"filename": "big.bin", "content_type": "application/octet-stream",
                                       "upload_id": "a" * 32}]})
    payload = os.urandom(4 << 20)
    data, _ = build_message(req, "big1", fetch_upload=lambda upload_id: payload)
    return data


def _boundary_message() -> bytes:
    from outpost.signing import BODY_CHUNK

    head = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    body = b"a" * (BODY_CHUNK - 1) + b"\r\n"  # the CR ends piece 0, its LF starts piece 1
    body += b"b" * (BODY_CHUNK - 10) + b" \t" * 20 + b"\r\n"  # a WSP run across piece 1/2, then CRLF
    body += b"word  \t word\t\tword   \r\n" * 150_000  # ~3.6 MB of runs and trailing WSP
    body += b"\r\n" * 100_000  # empty lines at the end, across several pieces
    assert len(body) > 3 * BODY_CHUNK
    return head + body


LARGE = [pytest.param(_mime_message, id="mime-4MiB-attachment"), pytest.param(_boundary_message, id="boundaries")]


@pytest.fixture(scope="module", params=LARGE)
def large_signed(request: pytest.FixtureRequest, keys: tuple[DkimKey, DkimKey]) -> bytes:
    message = request.param()
    assert len(message) > 3_000_000
    return Signer(list(keys)).sign(message) + message


def _flip_deep_in_body(signed: bytes) -> bytes:
    at = len(signed) * 2 // 3
    while signed[at : at + 1] in (b"\r", b"\n", b" ", b"\t"):
        at += 1
    return signed[:at] + (b"A" if signed[at : at + 1] != b"A" else b"B") + signed[at + 1 :]


def _dkimpy(dns: DnsServer, message: bytes) -> list[bool]:
    import dkim

    try:
        return dkimpy_results(dns.host, dns.port, message)
    except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
        return [False]


def test_dkimpy_verifies_a_large_message(dns: DnsServer, large_signed: bytes) -> None:
    assert _dkimpy(dns, large_signed) == [True, True]  # RSA, Ed25519 (keys over DNS)
    assert not any(_dkimpy(dns, _flip_deep_in_body(large_signed)))


@needs_perl
def test_mail_dkim_verifies_a_large_message(dns: DnsServer, large_signed: bytes, tmp_path: Path) -> None:
    sigs, overall = mail_dkim(dns, _write(tmp_path, large_signed))
    assert overall == "pass" and [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["pass"], sigs
    sigs, overall = mail_dkim(dns, _write(tmp_path, _flip_deep_in_body(large_signed)))
    assert [s.result for s in sigs if s.algorithm == "rsa-sha256"] == ["fail"] and overall != "pass", sigs


@needs_opendkim
def test_opendkim_verifies_a_large_message(dns: DnsServer, large_signed: bytes, tmp_path: Path) -> None:
    results = opendkim(dns, _write(tmp_path, large_signed), tmp_path)
    assert {r["a"]: r["result"] for r in results} == {"rsa-sha256": "pass", "ed25519-sha256": "pass"}, results
    results = opendkim(dns, _write(tmp_path, _flip_deep_in_body(large_signed)), tmp_path)
    assert {r["a"]: r["result"] for r in results} == {"rsa-sha256": "fail", "ed25519-sha256": "fail"}, results
