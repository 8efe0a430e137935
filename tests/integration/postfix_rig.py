"""Postfix from Debian as a test peer (test_pipelining.py, test_sender_postfix.py); it holds no
tests: one start-up, skipped with the reason where Postfix cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from outpost_local.postfix import PostfixInstance, postfix_available


@contextmanager
def running_postfix(workdir: Path, host: str, port: int, domain: str, users: set[str],
                    cert_files: tuple[Path, Path], *, hostname: str) -> Iterator[PostfixInstance]:
    """A Postfix instance for `domain` (its `users`) on host:port with STARTTLS (`cert_files`:
    the certificate chain and key, from the test CA), started, then stopped."""
    reason = postfix_available()
    if reason:
        pytest.skip(f"Postfix cannot run here: {reason}")
    pf = PostfixInstance(workdir, host, port, domain, users, cert_files, hostname=hostname)
    pf.start()
    try:
        yield pf
    finally:
        pf.stop()
