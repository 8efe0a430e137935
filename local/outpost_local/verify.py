"""DKIM verifiers that share no code with Outpost's signer, pointed at a local DNS server.

- dkimpy (`dkimpy_results`): the library Outpost builds on; keys fetched over real DNS.
- Perl's Mail::DKIM (Debian libmail-dkim-perl, `mail_dkim`): RSA only unless CryptX is present.
- OpenDKIM 2.11 (`opendkim -t`, `opendkim_results`): RSA and Ed25519. It always exits 0, so its
  verdicts are read from the Authentication-Results field it prints with -vvv. It resolves with
  libunbound, so an unbound config forwards every query to the local server (`Nameservers`
  takes no port).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

VERIFY_PL = Path(__file__).resolve().parent / "verify_dkim.pl"


@dataclass(frozen=True)
class PerlResult:
    result: str
    algorithm: str
    domain: str
    selector: str
    detail: str


def have_mail_dkim() -> bool:
    if shutil.which("perl") is None:
        return False
    probe = ["perl", "-MMail::DKIM::Verifier", "-MNet::DNS::Resolver", "-e", "1"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def have_opendkim() -> bool:
    return shutil.which("opendkim") is not None


def mail_dkim(host: str, port: int, message: bytes) -> tuple[list[PerlResult], str]:
    """Per-signature results and the overall verdict from Mail::DKIM."""
    with tempfile.NamedTemporaryFile(suffix=".eml") as f:
        f.write(message)
        f.flush()
        proc = subprocess.run(["perl", str(VERIFY_PL), host, str(port), f.name],
                              capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"verify_dkim.pl failed: {proc.stderr}")
    sigs, overall = [], ""
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "overall":
            overall = parts[1]
        else:
            sigs.append(PerlResult(*parts))
    return sigs, overall


def opendkim_results(host: str, port: int, message: bytes) -> list[dict[str, str]]:
    """One dict per signature: result (pass/fail/...), d, s, ... from OpenDKIM's -t mode."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "unbound.conf").write_text(
            "server:\n"
            "  do-not-query-localhost: no\n"  # libunbound refuses 127.0.0.0/8 by default
            # RFC 6761 names (.test, .invalid...) are answered locally unless told otherwise.
            '  local-zone: "test." nodefault\n'
            '  local-zone: "invalid." nodefault\n'
            "forward-zone:\n"
            '  name: "."\n'
            f"  forward-addr: {host}@{port}\n")
        (d / "opendkim.conf").write_text(f"Mode v\nSyslog no\nResolverConfiguration {d / 'unbound.conf'}\n")
        (d / "message.eml").write_bytes(message)
        proc = subprocess.run(["opendkim", "-x", str(d / "opendkim.conf"), "-vvv", "-t", str(d / "message.eml")],
                              capture_output=True, text=True, timeout=30)
    m = re.search(r"hname='Authentication-Results' hvalue='([^']*)'", proc.stdout)
    if not m:
        raise RuntimeError(f"no Authentication-Results in opendkim output:\n{proc.stdout}\n{proc.stderr}")
    results = []
    # Drop RFC 5322 comments first: "(2048-bit key; unprotected)" holds a semicolon.
    for clause in re.sub(r"\([^)]*\)", "", m.group(1)).split(";"):
        r = re.match(r"\s*dkim=(\w+)", clause)
        if r:
            tags = dict(re.findall(r"header\.(\w+)=(\S+)", clause))
            results.append({"result": r.group(1), **tags})
    return results


def dkimpy_results(host: str, port: int, message: bytes) -> list[bool]:
    """dkimpy's verdict for each DKIM-Signature, keys fetched from the DNS server."""
    import dkim
    import dns.nameserver
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        ans = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in ans)

    d = dkim.DKIM(message)
    n = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
    return [bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)) for i in range(n)]
