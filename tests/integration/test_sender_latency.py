"""The sender's concurrency at internet latency, bounded (issue 15 item 3).

The real DeliveryService (shaping on, as deployed) delivers SQS batches to MX hosts that are a
round trip away (outpost_local.latency_mx.LatencyMx: aiosmtpd behind a delay line, STARTTLS
verified against the test CA); the relay in front of each records the most sessions open at
once. The store is the in-memory fake (tests/fakes/store.py): this is about sessions, not items.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outpost.api.service import SendService
from outpost.config import Settings
from outpost.delivery import shaping
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import SmtpConnector
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from outpost.signing import RSA, Signer, generate_key
from outpost_local.latency_mx import LatencyMx
from outpost_local.lifecycle import free_port
from outpost_local.pki import TestPki
from tests.fakes.store import FakeDomains, FakeJobs, FakeMessages, FakeSuppressions

pytestmark = pytest.mark.timeout(180)

HOST = "127.0.15.30"
NAME = "mx.far.test"
SENDER = "shop.test"


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LatencyMx, str]]:
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    with LatencyMx(HOST, free_port(HOST), None, pki.server_context(NAME), NAME, delay=0.1) as server:
        yield server, str(pki.ca_bundle)


def _batch(mx: tuple[LatencyMx, str], domains: list[str], n: int, *, in_flight: int | None = None
           ) -> tuple[FakeMessages, list[str], dict[str, int]]:
    """n one-recipient messages over `domains` (every domain's MX is the one server), in one
    SQS batch; returns the store, the message ids and the relay's counters for the batch."""
    server, ca = mx
    store = FakeMessages()
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(), domains=FakeDomains(SENDER))
    mids = [str(api.send_one(SendRequest.model_validate({
        "from": f"Shop <news@{SENDER}>", "to": [f"user{i}@{domains[i % len(domains)]}"],
        "subject": f"Receipt {i}", "text": "Thanks.\n"}))["id"]) for i in range(n)]
    signer = Signer([generate_key(SENDER, "s1", RSA)])
    service = DeliveryService(
        settings=Settings.from_env({}), store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
        slots=store, resolve_mx=lambda d: [MxHost(f"mx.{d}" if len(domains) > 1 else NAME, 10, (HOST,))],
        connector=SmtpConnector("mta.shop.test", port=server.port, ca_bundle=ca),
        signer_for=lambda d: signer, return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}")
    if in_flight is not None:
        service.DOMAINS_IN_FLIGHT = in_flight
    assert server.proxy is not None
    with server.proxy._lock:
        server.proxy.max_active = server.proxy.active
    event = {"Records": [{"messageId": f"m{i}", "body": QueueJob(message_id=mid, attempt=1).model_dump_json()}
                         for i, mid in enumerate(mids)]}
    assert service.handle_sqs_event(event, lambda: 300_000) == {"batchItemFailures": []}
    return store, mids, server.proxy.counters()


def _states(store: FakeMessages, mids: list[str]) -> set[RecipientState]:
    return {r.state for mid in mids for r in store.load(mid).recipients}  # type: ignore[union-attr]


def test_one_site_gets_its_sessions_at_once_and_never_more(mx: tuple[LatencyMx, str]) -> None:
    # 30 jobs to one domain in one batch: they share the site's sessions, all of them in use.
    store, mids, seen = _batch(mx, ["far.test"], 30)
    assert _states(store, mids) == {RecipientState.DELIVERED}
    assert seen["max_active"] == shaping.SESSIONS_PER_DOMAIN == 5
    assert seen["connections"] == 5  # each session carried several messages (RSET between)


def test_an_invocation_holds_at_most_twice_domains_in_flight_sessions(mx: tuple[LatencyMx, str]) -> None:
    # 24 jobs to 12 domains (12 sites, all on one server): without the invocation's bound every
    # domain opens its sessions at once and keeps them idle to the end of the batch; with
    # DOMAINS_IN_FLIGHT = 3, at most 3 deliveries (one session each) run and 3 sessions wait idle.
    # The relay also counts a session during its QUIT's round trip: at most one more set of 3.
    domains = [f"d{k}.test" for k in range(12)]
    store, mids, seen = _batch(mx, domains, 24, in_flight=3)
    assert _states(store, mids) == {RecipientState.DELIVERED}
    assert seen["max_active"] <= 3 * 3
    # The control: the default bound (100) leaves this batch unbounded.
    store, mids, control = _batch(mx, domains, 24)
    assert _states(store, mids) == {RecipientState.DELIVERED}
    assert control["max_active"] > 3 * 3, control
