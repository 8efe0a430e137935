"""MTA-STS parsing, matching and caching (RFC 8461), with fake DNS and fetch functions and an
in-memory persistent store. The HTTPS fetch and the DynamoDB store run against real servers
in test_sender_mta_sts.py."""

from __future__ import annotations

import itertools
import logging

import pytest

from outpost.tls_policy import MtaSts, StsPolicy, StsPolicyError, mx_matches, parse_policy, parse_sts_txt

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"


def test_parse_policy() -> None:
    p = parse_policy(POLICY, "abc", fetched_at=100.0)
    assert (p.id, p.mode, p.mx, p.max_age, p.expires_at()) == (
        "abc", "enforce", ("mail.example.com", "*.example.net"), 86400, 86500.0)


@pytest.mark.parametrize("text", [
    "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
    "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
    "version: STSv1\nmode: enforce\nmx: a.b\n",
    "version: STSv1\nmode: enforce\nmax_age: 10\n",
    "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
])
def test_invalid_policies(text: str) -> None:
    with pytest.raises(StsPolicyError):
        parse_policy(text, "x")


def test_max_age_is_capped_at_one_year() -> None:
    assert parse_policy("version: STSv1\nmode: testing\nmx: a.b\nmax_age: 99999999\n", "x").max_age == 31557600


def test_mx_patterns() -> None:
    assert mx_matches("mail.example.com", "MAIL.example.com.")
    assert mx_matches("*.example.net", "mx1.example.net")
    assert not mx_matches("*.example.net", "example.net")
    assert not mx_matches("*.example.net", "a.b.example.net")  # one label only (§4.1)
    assert not mx_matches("mail.example.com", "mail.example.com.evil.test")


def test_sts_txt_record() -> None:
    assert parse_sts_txt(["v=spf1 -all", "v=STSv1; id=20240101T000000"]) == "20240101T000000"
    for bad in ([], ["v=STSv1; id="], ["v=STSv1;"], ["v=STSv1; id=a", "v=STSv1; id=b"], ["v=STSv1; id=a-b"]):
        with pytest.raises(StsPolicyError):
            parse_sts_txt(bad)


class MemoryStore:
    """The persistent cache level in memory (PolicyStore's contract: get/put by domain)."""

    def __init__(self) -> None:
        self.items: dict[str, StsPolicy] = {}
        self.gets = self.puts = 0
        self.down = False

    def get(self, domain: str) -> StsPolicy | None:
        self.gets += 1
        if self.down:
            raise ConnectionError("DynamoDB unreachable")
        return self.items.get(domain)

    def put(self, domain: str, policy: StsPolicy) -> None:
        self.puts += 1
        if self.down:
            raise ConnectionError("DynamoDB unreachable")
        self.items[domain] = policy


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.txt: dict[str, list[str]] = {}
        self.policies: dict[str, str] = {}
        self.fetches = 0
        self.dns_down = False

    def lookup(self, name: str) -> list[str]:
        if self.dns_down:
            raise OSError("SERVFAIL")
        return self.txt.get(name, [])

    def fetch(self, domain: str) -> str:
        self.fetches += 1
        if domain not in self.policies:
            raise StsPolicyError("HTTP 404")
        return self.policies[domain]

    def sts(self, store: MemoryStore | None = None) -> MtaSts:
        return MtaSts(txt=self.lookup, fetch=self.fetch, clock=lambda: self.now, store=store)


def test_no_record_no_policy_no_fetch() -> None:
    w = World()
    p = w.sts()("example.com")
    assert p.mode == "none" and p.policy is None and p.error is None and w.fetches == 0


def test_cached_by_id_until_max_age() -> None:
    w = World()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    w.policies["example.com"] = POLICY
    sts = w.sts()
    assert sts("example.com").mode == "enforce" and w.fetches == 1
    assert sts("example.com").policy.id == "one" and w.fetches == 1  # type: ignore[union-attr]
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    assert sts("example.com").policy.id == "two" and w.fetches == 2  # type: ignore[union-attr]
    w.now += 86400
    sts("example.com")
    assert w.fetches == 3  # expired: fetched again


def test_a_cached_policy_survives_dns_and_https_failures() -> None:
    w = World()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    w.policies["example.com"] = POLICY
    sts = w.sts()
    sts("example.com")
    w.dns_down = True
    p = sts("example.com")
    assert p.mode == "enforce" and p.error and "TXT lookup failed" in p.error
    w.dns_down = False
    w.txt.clear()  # record removed (or stripped by an attacker)
    assert sts("example.com").mode == "enforce"
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=new"]
    w.policies.clear()  # new id, but the fetch fails: keep the cached policy (§5.1)
    assert sts("example.com").policy.id == "one"  # type: ignore[union-attr]


def test_without_a_cache_a_failed_fetch_means_no_policy_with_the_reason() -> None:
    w = World()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    p = w.sts()("example.com")
    assert p.mode == "none" and p.error and "HTTP 404" in p.error


def test_mode_none_disables_the_policy() -> None:
    w = World()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=off"]
    w.policies["example.com"] = "version: STSv1\nmode: none\nmax_age: 600\n"
    sts = w.sts()
    assert sts("example.com").policy is None
    assert sts("example.com").policy is None and w.fetches == 1


# -- the persistent level (a fresh MtaSts is a cold Lambda container) ----------------------------


def _published(w: World) -> None:
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    w.policies["example.com"] = POLICY


def test_a_fetched_policy_is_written_through_to_the_store() -> None:
    w, store = World(), MemoryStore()
    _published(w)
    assert w.sts(store)("Example.COM.").mode == "enforce"
    stored = store.items["example.com"]
    assert (stored.id, stored.mode, stored.mx, stored.max_age, stored.fetched_at) == (
        "one", "enforce", ("mail.example.com", "*.example.net"), 86400, 1000.0)


@pytest.mark.parametrize("attack", ["dns_down", "txt_removed", "fetch_blocked"])
def test_a_cold_container_enforces_the_persisted_policy_under_attack(attack: str) -> None:
    w, store = World(), MemoryStore()
    _published(w)
    w.sts(store)("example.com")  # container 1 fetched the policy
    w.now += 3600
    if attack == "dns_down":
        w.dns_down = True
    elif attack == "txt_removed":
        w.txt.clear()
    else:  # a new id is published but the policy host is unreachable
        w.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
        w.policies.clear()
    cold = w.sts(store)  # container 2: nothing in memory
    p = cold("example.com")
    assert p.mode == "enforce" and p.policy is not None and p.policy.id == "one"
    assert p.policy.allows("mx1.example.net") and not p.policy.allows("mx.evil.test")
    assert w.fetches == (2 if attack == "fetch_blocked" else 1)
    # Without the store, the same cold container would have switched enforcement off.
    assert w.sts()("example.com").mode == "none"


def test_a_cold_container_reuses_the_persisted_policy_without_fetching() -> None:
    w, store = World(), MemoryStore()
    _published(w)
    w.sts(store)("example.com")
    cold = w.sts(store)
    assert cold("example.com").policy.id == "one" and w.fetches == 1  # type: ignore[union-attr]
    assert cold("example.com").mode == "enforce" and store.gets == 2  # the second call: memory
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]  # a changed id still refetches
    assert w.sts(store)("example.com").policy.id == "two" and w.fetches == 2  # type: ignore[union-attr]
    assert store.items["example.com"].id == "two"


def test_an_expired_persisted_policy_is_ignored() -> None:
    w, store = World(), MemoryStore()
    _published(w)
    w.sts(store)("example.com")
    w.now += 86400  # max_age ran out; DynamoDB's TTL deletion may not have happened yet
    w.dns_down = True
    p = w.sts(store)("example.com")
    assert p.mode == "none" and p.error and "TXT lookup failed" in p.error
    w.dns_down = False
    assert w.sts(store)("example.com").mode == "enforce" and w.fetches == 2  # fetched afresh
    assert store.items["example.com"].fetched_at == w.now


def test_a_persisted_mode_none_policy_stays_off_without_fetching() -> None:
    w, store = World(), MemoryStore()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=off"]
    w.policies["example.com"] = "version: STSv1\nmode: none\nmax_age: 600\n"
    w.sts(store)("example.com")
    p = w.sts(store)("example.com")
    assert p.policy is None and p.error is None and w.fetches == 1


def test_a_failing_store_degrades_to_the_container_cache(caplog: pytest.LogCaptureFixture) -> None:
    w, store = World(), MemoryStore()
    _published(w)
    store.down = True
    sts = w.sts(store)
    with caplog.at_level(logging.WARNING, logger="outpost.sender"):
        assert sts("example.com").mode == "enforce"  # read and write both failed: still fetched
    assert store.items == {} and w.fetches == 1
    assert [r.getMessage() for r in caplog.records] == [
        "MTA-STS policy store read failed; using the container cache only",
        "MTA-STS policy store write failed; cached in this container only"]
    assert all(getattr(r, "recipient_domain", None) == "example.com" for r in caplog.records)
    w.dns_down = True  # the in-container cache still protects this container
    assert sts("example.com").policy.id == "one"  # type: ignore[union-attr]
    assert w.sts(store)("example.com").mode == "none"  # a cold one, with the store down: as before


def test_a_store_error_on_a_cold_container_with_dns_up_fetches() -> None:
    w, store = World(), MemoryStore()
    _published(w)
    w.sts(store)("example.com")
    store.down = True
    p = w.sts(store)("example.com")
    assert p.mode == "enforce" and p.error is None and w.fetches == 2


# -- issue 8 item 5: negative caching and the lookup deadline -------------------------------------


class CountingWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def lookup(self, name: str) -> list[str]:
        self.lookups += 1
        return super().lookup(name)


@pytest.mark.parametrize("failure", ["fetch", "dns"])
def test_a_failed_lookup_is_remembered_for_the_negative_ttl(failure: str) -> None:
    w = CountingWorld()
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    if failure == "dns":
        w.dns_down = True
    sts = MtaSts(txt=w.lookup, fetch=w.fetch, clock=lambda: w.now, negative_ttl=600)
    first = sts("example.com")
    assert first.policy is None and first.error
    calls = (w.lookups, w.fetches)
    for _ in range(50):  # every job in the next 10 minutes: no DNS, no HTTPS
        w.now += 10
        p = sts("example.com")
        assert p.policy is None and p.error and "not retried until" in p.error
    assert (w.lookups, w.fetches) == calls
    # Fixed meanwhile, and the window over: looked up again, and a success clears the failure.
    w.dns_down = False
    w.policies["example.com"] = POLICY
    w.now += 101
    assert sts("example.com").mode == "enforce" and w.lookups == calls[0] + 1
    assert sts("example.com").mode == "enforce" and sts._failed == {}


def test_during_the_negative_window_a_cached_policy_still_applies() -> None:
    w = CountingWorld()
    _published(w)
    sts = MtaSts(txt=w.lookup, fetch=w.fetch, clock=lambda: w.now)
    sts("example.com")
    w.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    w.policies.clear()  # the new policy cannot be fetched: keep enforcing the cached one
    assert sts("example.com").policy.id == "one" and w.fetches == 2  # type: ignore[union-attr]
    for _ in range(5):
        p = sts("example.com")
        assert p.policy is not None and p.policy.id == "one" and p.mode == "enforce"
    assert w.fetches == 2 and w.lookups == 2  # no refetch of the new id inside the window


def test_the_deadline_reaches_the_lookups() -> None:
    seen: dict[str, float] = {}
    ticks = itertools.chain([100.0, 100.5], itertools.repeat(101.0))

    def txt(name: str, lifetime: float | None = None) -> list[str]:
        seen["lifetime"] = lifetime or -1
        return ["v=STSv1; id=one"]

    def fetch(domain: str, deadline: float | None = None) -> str:
        seen["deadline"] = deadline or -1
        return POLICY

    sts = MtaSts(txt=txt, fetch=fetch, deadline=10.0, monotonic=lambda: next(ticks))
    assert sts.policy_for("example.com", budget=4.0).mode == "enforce"
    assert seen == {"lifetime": 3.5, "deadline": 104.0}  # min(10, budget 4) from t=100
