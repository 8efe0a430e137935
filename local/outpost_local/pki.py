"""A throwaway certificate authority (trustme) for STARTTLS on the local MX hosts.

The CA's PEM is written to `ca_bundle`, which the local stack passes as OUTPOST_CA_BUNDLE so
the sender verifies local MX certificates exactly as it verifies real ones. A second CA that
nobody trusts, and expired leaves, exist for the "wrong certificate" tests.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme

__all__ = ["TestPki"]


class TestPki:
    """Issue leaf certificates for loopback MX hosts from a CA that only the tests trust."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="Outpost local test CA")
        self._untrusted_ca = trustme.CA(organization_name="Untrusted CA")
        self.ca_bundle = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_bundle))
        self._leaves: dict[tuple[str, ...], trustme.LeafCert] = {}

    def _leaf(self, hostnames: tuple[str, ...]) -> trustme.LeafCert:
        if not hostnames:
            raise ValueError("at least one hostname (or IP address) is needed")
        leaf = self._leaves.get(hostnames)
        if leaf is None:
            # trustme puts IP-looking identities in iPAddress SANs and the rest in dNSName SANs.
            leaf = self._leaves[hostnames] = self._ca.issue_cert(*hostnames)
        return leaf

    def server_context(self, *hostnames: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for `hostnames` (names and/or IPs)."""
        ctx = _server_ctx()
        self._leaf(hostnames).configure_cert(ctx)
        return ctx

    def cert_files(self, *hostnames: str) -> tuple[Path, Path]:
        """(certificate chain PEM, private key PEM) on disk, e.g. for Postfix."""
        leaf = self._leaf(hostnames)
        stem = "_".join(h.replace("*", "star").replace(":", "_") for h in hostnames)
        cert, key = self.directory / f"{stem}.crt.pem", self.directory / f"{stem}.key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        return cert, key

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA (hostname checking on)."""
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def untrusted_server_context(self, *hostnames: str) -> ssl.SSLContext:
        """A server context whose certificate chains to a CA nobody trusts."""
        ctx = _server_ctx()
        self._untrusted_ca.issue_cert(*hostnames).configure_cert(ctx)
        return ctx

    def expired_server_context(self, *hostnames: str) -> ssl.SSLContext:
        """A server context with a certificate from the trusted CA that expired yesterday."""
        now = datetime.datetime.now(datetime.UTC)
        leaf = self._ca.issue_cert(
            *hostnames,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        ctx = _server_ctx()
        leaf.configure_cert(ctx)
        return ctx


def _server_ctx() -> ssl.SSLContext:
    # Purpose.CLIENT_AUTH builds a server-side context: no client certificates requested and
    # no hostname check, which is what aiosmtpd expects of its tls_context.
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
