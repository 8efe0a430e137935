"""MX routing (RFC 5321 §5.1, RFC 7505) against a real authoritative DNS server on loopback:
preference order, spreading among equal preferences, implicit MX, null MX, NXDOMAIN, SERVFAIL,
timeouts, the host cap, IPv6 opt-in, TTL caching, and the TXT lookups MTA-STS uses."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from outpost.errors import DnsError
from outpost.mx import MxResolver
from outpost_local.dns import DnsServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer("127.0.5.1", 0) as server:
        yield server


def _resolver(dns: DnsServer, **kw: object) -> MxResolver:
    return MxResolver([(dns.host, dns.port)], timeout=0.5, **kw)  # type: ignore[arg-type]


def test_preference_order_and_equal_preference_spreading(dns: DnsServer) -> None:
    for pref, name, ip in [(20, "b1", "127.0.5.21"), (10, "a1", "127.0.5.11"), (10, "a2", "127.0.5.12"),
                           (10, "a3", "127.0.5.13"), (30, "c1", "127.0.5.31")]:
        dns.add("spread.test", "MX", (pref, f"{name}.spread.test"))
        dns.add(f"{name}.spread.test", "A", ip)
    r = _resolver(dns)
    firsts: Counter[str] = Counter()
    for _ in range(600):
        hosts = r.resolve("spread.test")
        assert [h.preference for h in hosts] == [10, 10, 10, 20, 30]
        assert {h.name for h in hosts[:3]} == {"a1.spread.test", "a2.spread.test", "a3.spread.test"}
        firsts[hosts[0].name] += 1
    # Uniform over 3: expected 200 each; 120 is more than 6 standard deviations (~11.5) away.
    assert set(firsts) == {"a1.spread.test", "a2.spread.test", "a3.spread.test"}
    assert min(firsts.values()) > 120, firsts


def test_at_most_five_hosts(dns: DnsServer) -> None:
    for i in range(8):
        dns.add("many.test", "MX", (i, f"mx{i}.many.test"))
        dns.add(f"mx{i}.many.test", "A", f"127.0.5.{40 + i}")
    hosts = _resolver(dns).resolve("many.test")
    assert [h.name for h in hosts] == [f"mx{i}.many.test" for i in range(5)]


def test_implicit_mx_null_mx_and_nxdomain(dns: DnsServer) -> None:
    dns.add("implicit.test", "A", "127.0.5.9")
    dns.add("null.test", "MX", (0, "."))
    r = _resolver(dns)
    [h] = r.resolve("implicit.test")
    assert (h.name, h.addresses, h.implicit) == ("implicit.test", ("127.0.5.9",), True)
    with pytest.raises(DnsError) as null:
        r.resolve("null.test")
    assert null.value.permanent and null.value.status == "5.1.10"
    with pytest.raises(DnsError) as nx:
        r.resolve("nosuch.test")
    assert nx.value.permanent and nx.value.status == "5.1.2"


def test_servfail_and_timeout_are_transient(dns: DnsServer) -> None:
    dns.set_servfail("sf.test")
    dns.set_timeout("slow.test")
    r = _resolver(dns)
    for domain in ("sf.test", "slow.test"):
        with pytest.raises(DnsError) as exc:
            r.resolve(domain)
        assert not exc.value.permanent and exc.value.status == "4.4.3"


def test_mx_hosts_without_addresses_are_transient(dns: DnsServer) -> None:
    dns.add("dangling.test", "MX", (10, "gone.dangling.test"))
    dns.set_servfail("gone.dangling.test")
    with pytest.raises(DnsError) as exc:
        _resolver(dns).resolve("dangling.test")
    assert not exc.value.permanent


def test_ipv6_is_opt_in(dns: DnsServer) -> None:
    dns.add("v6.test", "MX", (10, "mx.v6.test"))
    dns.add("mx.v6.test", "A", "127.0.5.60")
    dns.add("mx.v6.test", "AAAA", "::1")
    [v4] = _resolver(dns).resolve("v6.test")
    assert v4.addresses == ("127.0.5.60",)
    assert not any(q.rtype == "AAAA" for q in dns.queries)  # not even asked
    [both] = _resolver(dns, ipv6=True).resolve("v6.test")
    assert both.addresses == ("127.0.5.60", "::1")  # IPv4 first, then IPv6


def test_answers_are_cached_for_their_ttl(dns: DnsServer) -> None:
    dns.add("cached.test", "MX", (10, "mx.cached.test"), ttl=1)
    dns.add("mx.cached.test", "A", "127.0.5.70", ttl=1)
    r = _resolver(dns)

    def mx_queries() -> int:
        return sum(1 for q in dns.queries if q.name == "cached.test." and q.rtype == "MX")

    r.resolve("cached.test")
    r.resolve("cached.test")
    assert mx_queries() == 1  # the second came from the cache
    time.sleep(1.2)
    r.resolve("cached.test")
    assert mx_queries() == 2  # the TTL ran out


def test_txt_lookup_for_mta_sts(dns: DnsServer) -> None:
    dns.add("_mta-sts.sts.test", "TXT", "v=STSv1; id=20240101")
    r = _resolver(dns)
    assert r.txt("_mta-sts.sts.test") == ["v=STSv1; id=20240101"]
    assert r.txt("_mta-sts.none.test") == []  # NXDOMAIN: no policy
    dns.set_servfail("_mta-sts.broken.test")
    with pytest.raises(DnsError):
        r.txt("_mta-sts.broken.test")
