"""Fixtures shared by the integration tests: the sender's rig (sender_rig.py: a bare moto server
provisioned from template.yaml, a DNS server, a test CA, scriptable MX hosts, a clock) and an
MX-host factory."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sender_rig import aws_fixture, pki_fixture, rig_fixture, signer_fixture  # noqa: F401 - fixtures

from outpost_local.mx import MxServer


@pytest.fixture
def mx_factory() -> Iterator[Callable[..., MxServer]]:
    """Start scriptable MX hosts for a test; all are stopped when it ends."""
    started: list[MxServer] = []

    def make(*args: Any, **kwargs: Any) -> MxServer:
        server = MxServer(*args, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
