"""The server's TLS context, from the certificate chain and key PEMs (Secrets Manager's
`{"certificate_chain": PEM, "private_key": PEM}` in AWS; the local test CA's files locally)."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = ["context_from_secret", "server_context"]


def server_context(chain_pem: str, key_pem: str) -> ssl.SSLContext:
    """TLS 1.2 or later (RFC 8314 §4.1), no client certificates asked for."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a chain only from files: written to a private temporary directory, then removed.
    with tempfile.TemporaryDirectory(prefix="outpost-tls-") as tmp:
        cert, key = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, pem in ((cert, chain_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
        ctx.load_cert_chain(cert, key)
    return ctx


def context_from_secret(value: Mapping[str, Any] | None, secret_id: str) -> ssl.SSLContext:
    if not value or not value.get("certificate_chain") or not value.get("private_key"):
        raise RuntimeError(f"the secret {secret_id!r} must hold JSON "
                           '{"certificate_chain": PEM, "private_key": PEM}')
    return server_context(str(value["certificate_chain"]), str(value["private_key"]))
