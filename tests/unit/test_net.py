"""Issue 9, item 9: one DNS resolver factory and one HTTPS client factory, built by bootstrap
from the settings and used by the MX resolver, the domain checks and the MTA-STS fetch."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import pytest
import trustme

from outpost import bootstrap
from outpost.mx import DNS_TIMEOUT, MxResolver
from outpost.net import HttpsClient, PinnedHttpsConnection, dns_resolver
from outpost.tls_policy import FETCH_TIMEOUT, HttpsPolicyFetcher


@pytest.fixture
def env(stacks_paused: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("OUTPOST_DNS_SERVERS", "127.0.0.53:5353,127.0.0.54")
    monkeypatch.setenv("OUTPOST_CA_BUNDLE", str(bundle))
    bootstrap.reset()
    yield bundle
    bootstrap.reset()


def _servers(r: dns.resolver.Resolver) -> list[tuple[str, int]]:
    return [(ns, r.port) if isinstance(ns, str) else (ns.address, ns.port) for ns in r.nameservers]


def test_bootstrap_builds_the_resolvers_from_the_settings(env: Path) -> None:
    delivery, checks = bootstrap.dns_resolver(), bootstrap.dns_resolver(cache=False)
    assert _servers(delivery) == _servers(checks) == [("127.0.0.53", 5353), ("127.0.0.54", 53)]
    # Delivery caches answers for their TTL; the domain checks never do.
    assert isinstance(delivery.cache, dns.resolver.Cache) and checks.cache is None
    assert delivery.lifetime == delivery.timeout == DNS_TIMEOUT
    assert checks.lifetime == bootstrap.DOMAIN_CHECK_TIMEOUT
    assert bootstrap.dns_resolver() is delivery  # built once per container
    # The MX resolver built by bootstrap's caller uses exactly this resolver.
    assert MxResolver(resolver=delivery).resolver is delivery


def test_without_servers_the_system_resolver_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTPOST_DNS_SERVERS", raising=False)
    system = dns.resolver.Resolver()
    r = dns_resolver(lifetime=2.0, cache=False)
    assert _servers(r) == _servers(system) and r.lifetime == 2.0


def test_the_https_client_trusts_the_configured_bundle(env: Path) -> None:
    client = bootstrap.https_client()
    assert isinstance(client, HttpsClient) and client.timeout == FETCH_TIMEOUT
    assert client.context.verify_mode == ssl.CERT_REQUIRED and client.context.check_hostname
    assert client.context.minimum_version == ssl.TLSVersion.TLSv1_2
    # The bundle's CA, and only it, is in the store (not the system's roots).
    assert len(client.context.get_ca_certs()) == 1
    conn = client.connect("mta-sts.example.test", "127.0.0.1", 443, deadline=0.0)
    assert isinstance(conn, PinnedHttpsConnection) and conn.host == "mta-sts.example.test"
    assert conn.expired  # a deadline in the past: nothing would be sent
    # The MTA-STS fetcher takes the connection from the client it is given.
    fetch = HttpsPolicyFetcher(lambda name: [], https=client)
    assert fetch.https is client
