"""MX routing (RFC 5321 §5.1, RFC 7505) against a real authoritative DNS server on loopback:
preference order, spreading among equal preferences, implicit MX, null MX, NXDOMAIN, SERVFAIL,
timeouts, the host cap, IPv6 opt-in, TTL caching, and the TXT lookups MTA-STS uses."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from outpost.delivery.trouble import Outcome, judge
from outpost.errors import DnsError, DnsLookupError, NoSuchDomainError, NullMxError, RefusedAddressError
from outpost.mx import MxResolver
from outpost_local.dns import DnsServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer("127.0.5.1", 0) as server:
        yield server


def _resolver(dns: DnsServer, **kw: object) -> MxResolver:
    kw.setdefault("allow_private", True)  # the peers here are on loopback, as in the local stack
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
    with pytest.raises(NullMxError) as null:
        r.resolve("null.test")
    assert (judge(null.value).outcome, judge(null.value).status) == (Outcome.PERMANENT, "5.1.10")
    with pytest.raises(NoSuchDomainError) as nx:
        r.resolve("nosuch.test")
    assert (judge(nx.value).outcome, judge(nx.value).status) == (Outcome.PERMANENT, "5.1.2")


def test_servfail_and_timeout_are_transient(dns: DnsServer) -> None:
    dns.set_servfail("sf.test")
    dns.set_timeout("slow.test")
    r = _resolver(dns)
    for domain in ("sf.test", "slow.test"):
        with pytest.raises(DnsLookupError) as exc:
            r.resolve(domain)
        assert (judge(exc.value).outcome, judge(exc.value).status) == (Outcome.TRANSIENT, "4.4.3")


def test_mx_hosts_without_addresses_are_transient(dns: DnsServer) -> None:
    dns.add("dangling.test", "MX", (10, "gone.dangling.test"))
    dns.set_servfail("gone.dangling.test")
    with pytest.raises(DnsLookupError) as exc:
        _resolver(dns).resolve("dangling.test")
    assert judge(exc.value).outcome is Outcome.TRANSIENT


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


# == issue 8: the address cap (smtp_mx_address_limit) and non-public addresses ===================


def test_at_most_five_addresses_over_all_hosts(dns: DnsServer) -> None:
    # A hostile domain: 8 MX hosts with 6 addresses each would be 48 connection attempts.
    for i in range(8):
        dns.add("wide.test", "MX", (i, f"mx{i}.wide.test"))
        for j in range(6):
            dns.add(f"mx{i}.wide.test", "A", f"127.0.6.{i * 10 + j}")
    hosts = _resolver(dns).resolve("wide.test")
    assert [h.name for h in hosts] == ["mx0.wide.test"]
    assert sum(len(h.addresses) for h in hosts) == 5
    assert set(hosts[0].addresses) <= {f"127.0.6.{j}" for j in range(6)}
    # The budget spent, no further host is even looked up.
    assert not any(q.name.startswith("mx1.wide.test") for q in dns.queries)
    # Configurable (OUTPOST_MX_ADDRESS_LIMIT), and spread over hosts in preference order.
    for i in range(2):
        dns.add("two.test", "MX", (i, f"mx{i}.two.test"))
        dns.add(f"mx{i}.two.test", "A", f"127.0.7.{i}")
    hosts = _resolver(dns, max_addresses=2).resolve("two.test")
    assert [(h.name, h.addresses) for h in hosts] == [("mx0.two.test", ("127.0.7.0",)),
                                                      ("mx1.two.test", ("127.0.7.1",))]
    many = _resolver(dns, max_addresses=3).resolve("wide.test")
    assert [len(h.addresses) for h in many] == [3]


def test_the_cap_spreads_over_a_hosts_addresses(dns: DnsServer) -> None:
    dns.add("rr.test", "MX", (10, "mx.rr.test"))
    for j in range(10):
        dns.add("mx.rr.test", "A", f"127.0.8.{j}")
    r = _resolver(dns, max_addresses=1)
    seen = {r.resolve("rr.test")[0].addresses[0] for _ in range(200)}
    assert len(seen) >= 8  # smtp_randomize_addresses: the cap does not always pick the same one


REFUSED = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1",
           "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255"]


def test_non_public_mx_addresses_are_refused_by_default(dns: DnsServer) -> None:
    for i, ip in enumerate(REFUSED):
        dns.add(f"evil{i}.test", "MX", (10, f"mx.evil{i}.test"))
        dns.add(f"mx.evil{i}.test", "A", ip)
    strict = MxResolver([(dns.host, dns.port)], timeout=0.5)  # the AWS default
    for i, ip in enumerate(REFUSED):
        with pytest.raises(RefusedAddressError) as exc:
            strict.resolve(f"evil{i}.test")
        assert (judge(exc.value).outcome, judge(exc.value).status) == (Outcome.PERMANENT, "5.4.4"), ip
        assert ip in str(exc.value)
    # Implicit MX on a private address: the same.
    dns.add("bare.test", "A", "10.1.2.3")
    with pytest.raises(RefusedAddressError) as bare:
        strict.resolve("bare.test")
    assert judge(bare.value).status == "5.4.4"
    # The local stack allows them (OUTPOST_ALLOW_PRIVATE_MX).
    assert _resolver(dns).resolve("evil3.test")[0].addresses == ("127.0.0.1",)


def test_private_addresses_are_dropped_and_public_ones_kept(dns: DnsServer) -> None:
    dns.add("mixed.test", "MX", (10, "inside.mixed.test"))
    dns.add("mixed.test", "MX", (20, "outside.mixed.test"))
    dns.add("inside.mixed.test", "A", "10.0.0.5")
    dns.add("outside.mixed.test", "A", "192.168.0.9")
    dns.add("outside.mixed.test", "A", "8.8.4.4")
    strict = MxResolver([(dns.host, dns.port)], timeout=0.5)
    [h] = strict.resolve("mixed.test")
    assert (h.name, h.addresses) == ("outside.mixed.test", ("8.8.4.4",))
    # A refused host next to one whose lookup failed: the failure may pass, so transient.
    dns.add("half.test", "MX", (10, "inside.half.test"))
    dns.add("half.test", "MX", (20, "broken.half.test"))
    dns.add("inside.half.test", "A", "127.0.0.1")
    dns.set_servfail("broken.half.test")
    with pytest.raises(DnsLookupError) as exc:
        strict.resolve("half.test")
    assert (judge(exc.value).outcome, judge(exc.value).status) == (Outcome.TRANSIENT, "4.4.3")


def test_ipv6_forms_of_non_public_addresses_are_refused() -> None:
    from outpost.mx import is_public

    for ip in ["::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:10.0.0.1",
               "::ffff:127.0.0.1", "2002:a00:1::1", "64:ff9b::a9fe:a9fe", "2001:db8::1",
               "2001:0:4136:e378:8000:63bf:f5ff:fffe", "not an address"]:
        assert not is_public(ip), ip
    for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]:
        assert is_public(ip), ip
