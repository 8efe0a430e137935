"""DomainService and KeyRing built with the in-memory fakes of tests/fakes/store.py, a fake DNS
lookup and clocks the test moves by hand: the rules of sending domains (pending until DKIM is
published, SPF and DMARC checks, a DNS outage changes nothing) and of API keys (unknown,
revoked within the cache window, scopes, throttling, last use), in milliseconds.
The same rules against real DNS and DynamoDB Local: tests/integration/test_api_domains.py and
test_api_http.py."""

from __future__ import annotations

import pytest

from outpost.api.auth import TOUCH_EVERY, KeyRing, TokenBuckets
from outpost.api.domains import DomainService
from outpost.errors import (
    DnsUnavailableError,
    ForbiddenError,
    NotFoundError,
    ThrottledError,
    UnauthorizedError,
)
from outpost.records import ApiKey, Domain
from outpost.signing import keys_from_secret
from tests.fakes.store import FakeApiKeys, FakeClock, FakeDomains, FakeSecrets

SENDER_IP = "192.0.2.7"
REGION = "eu-west-1"
BOUNCE_MX = f"10 inbound-smtp.{REGION}.amazonaws.com"


class FakeDns:
    """(name, type) -> answers; `down` makes every lookup fail as a SERVFAIL would."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[str]] = {}
        self.down = False

    def __call__(self, name: str, rtype: str) -> list[str]:
        if self.down:
            raise DnsUnavailableError("SERVFAIL")
        return list(self.answers.get((name, rtype), []))

    def publish(self, records: list[dict]) -> None:
        for r in records:
            self.answers.setdefault((r["name"], r["type"]), []).append(r["value"])


class DomainWorld:
    def __init__(self, *, sender_ip: str | None = SENDER_IP, unverify_after_hours: float = 72) -> None:
        self.clock, self.dns = FakeClock(), FakeDns()
        self.domains, self.secrets = FakeDomains(), FakeSecrets()
        self.svc = DomainService(domains=self.domains, secrets=self.secrets, secret_id=lambda d: f"dkim/{d}",
                                 lookup=self.dns, sender_ip=sender_ip, bounce_domain="bounces.example.net",
                                 region=REGION, unverify_after_hours=unverify_after_hours, clock=self.clock)


def _by_purpose(view: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in view["records"]:
        out.setdefault(r["purpose"], []).append(r)
    return out


def _dkim(view: dict) -> list[dict]:
    return _by_purpose(view)["dkim"]


# ---- DomainService ---------------------------------------------------------------------------

def test_a_new_domain_is_pending_with_its_dkim_records_to_publish() -> None:
    w = DomainWorld()
    view = w.svc.create("Shop.Example")
    assert view["domain"] == "shop.example" and view["verified"] is False
    dkim = _dkim(view)
    # RFC 8463 §6: an RSA and an Ed25519 key, each under its own selector, both to publish
    assert [r["status"] for r in dkim] == ["missing", "missing"] and all(r["required"] for r in dkim)
    assert {r["value"].split(";")[1].strip() for r in dkim} == {"k=rsa", "k=ed25519"}
    stored = w.domains.domain("shop.example")
    assert stored == Domain(domain="shop.example", verified=False, created_at=stored.created_at if stored else None,
                            selectors=tuple(view["selectors"]), mta_sts=False)
    keys = keys_from_secret(w.secrets.data["dkim/shop.example"])
    assert [f"{k.selector}._domainkey.shop.example" for k in keys] == [r["name"] for r in dkim]


def test_publishing_the_dkim_records_and_verifying_makes_the_domain_verified() -> None:
    w = DomainWorld()
    view = w.svc.create("shop.example")
    assert w.svc.verify("shop.example")["verified"] is False  # nothing published yet
    w.dns.publish(_dkim(view))
    assert w.svc.check("shop.example")["verified"] is False  # a GET reports, writes nothing
    assert w.domains.domain("shop.example").verified is False  # type: ignore[union-attr]
    w.clock.advance(60)
    after = w.svc.verify("shop.example")
    assert after["verified"] is True and [r["status"] for r in _dkim(after)] == ["verified", "verified"]
    stored = w.domains.domain("shop.example")
    assert stored is not None and stored.verified and stored.verified_at == after["verified_at"]
    assert stored.checked_at == stored.verified_at


def test_spf_must_hold_the_sender_ip_once_and_dmarc_is_a_suggestion() -> None:
    w = DomainWorld()
    w.svc.create("shop.example")

    def spf_dmarc() -> tuple[str, str]:
        got = _by_purpose(w.svc.check("shop.example"))
        return got["spf"][0]["status"], got["dmarc"][0]["status"]

    assert spf_dmarc() == ("missing", "missing")
    w.dns.answers[("shop.example", "TXT")] = ["v=spf1 include:_spf.other.example -all", "site-verification=x"]
    assert spf_dmarc()[0] == "wrong"  # an SPF record without our IP
    w.dns.answers[("shop.example", "TXT")] = ["v=spf1 ip4:192.0.2.0/24 -all", "site-verification=x"]
    assert spf_dmarc()[0] == "verified"  # our IP inside a published network
    w.dns.answers[("shop.example", "TXT")].append("v=spf1 ip4:192.0.2.7 -all")
    assert spf_dmarc()[0] == "wrong"  # RFC 7208 §4.5: two SPF records are a permerror
    w.dns.answers[("_dmarc.shop.example", "TXT")] = ["v=DMARC1; p=none"]
    assert spf_dmarc()[1] == "verified"
    # Neither is required: a domain verifies on DKIM alone.
    spf = _by_purpose(w.svc.check("shop.example"))["spf"][0]
    assert spf["required"] is False and spf["value"] == "v=spf1 ip4:192.0.2.7 ~all"


def test_without_a_known_sender_ip_spf_is_unchecked() -> None:
    w = DomainWorld(sender_ip=None)
    spf = _by_purpose(w.svc.create("shop.example"))["spf"][0]
    assert spf["status"] == "unchecked" and "OUTPOST_SENDER_IP" in spf["note"]


def test_a_dns_outage_reports_unchecked_and_changes_nothing() -> None:
    w = DomainWorld(unverify_after_hours=0)
    view = w.svc.create("shop.example")
    w.dns.down = True
    # Not verified by an outage (DnsUnavailableError is handled per record, never raised)...
    during = w.svc.verify("shop.example")
    assert during["verified"] is False
    assert {r["status"] for r in during["records"]} == {"unchecked"}
    assert all(r["note"] == "DNS lookup failed: SERVFAIL" for r in during["records"])
    w.dns.down = False
    w.dns.publish(_dkim(view))
    assert w.svc.verify("shop.example")["verified"] is True
    # ...and not un-verified by one either, even with no grace at all: only a definite answer
    # that the record is missing or wrong counts.
    w.dns.down = True
    for _ in range(3):
        w.clock.advance(3600)
        during = w.svc.verify("shop.example")
        assert during["verified"] is True and during["dkim_failing_since"] is None
    w.dns.down = False
    w.dns.answers.clear()  # the records are really gone: failing now, un-verified next time
    assert w.svc.verify("shop.example")["dkim_failing_since"]
    w.clock.advance(1)
    gone = w.svc.verify("shop.example")
    assert gone["verified"] is False and gone["unverified_at"] and gone["dkim_failing_since"] is None


def test_a_domain_that_is_not_there_is_not_found() -> None:
    w = DomainWorld()
    with pytest.raises(NotFoundError):
        w.svc.check("nobody.example")
    with pytest.raises(NotFoundError):
        w.svc.rotate("nobody.example")


def test_dkim_key_times_in_the_secret_keep_their_microsecond_format() -> None:
    # The secret's key entries carry datetime.isoformat() times (microseconds, +00:00), as
    # secrets stored before this change do; the domain record uses the records' format.
    w = DomainWorld()
    w.clock.now = 1_800_000_000.123456
    w.svc.create("shop.example")
    entry = w.secrets.data["dkim/shop.example"]["keys"][0]
    assert entry["created_at"] == "2027-01-15T08:00:00.123456+00:00"
    assert w.domains.domain("shop.example").created_at == "2027-01-15T08:00:00.123Z"  # type: ignore[union-attr]


# ---- KeyRing ---------------------------------------------------------------------------------

class KeyWorld:
    def __init__(self, *, rate: float = 1000.0, burst: int = 1000) -> None:
        self.clock, self.mono = FakeClock(), FakeClock(0.0)
        self.keys = FakeApiKeys()
        self.buckets = TokenBuckets(rate, burst, clock=self.mono)
        self.ring = KeyRing(self.keys, clock=self.clock, buckets=self.buckets, monotonic=self.mono)
        self.admin = KeyRing(self.keys, clock=self.clock)  # the CLI: another process

    def key(self, *scopes: str, **kw: object) -> tuple[str, dict]:
        return self.admin.create("k", list(scopes), **kw)  # type: ignore[arg-type]


def test_a_missing_or_unknown_key_is_unauthorized() -> None:
    w = KeyWorld()
    with pytest.raises(UnauthorizedError):
        w.ring.authenticate(None, "send")
    with pytest.raises(UnauthorizedError):
        w.ring.authenticate("Basic dXNlcjpwYXNz", "send")
    with pytest.raises(UnauthorizedError):
        w.ring.authenticate("Bearer op_not_a_key_we_made", "send")


def test_a_key_has_its_scopes_and_admin_implies_the_rest() -> None:
    w = KeyWorld()
    read, _ = w.key("read")
    admin, _ = w.key("admin")
    assert w.ring.authenticate(f"Bearer {read}", "read").scopes == frozenset({"read"})
    with pytest.raises(ForbiddenError, match="'send' scope"):
        w.ring.authenticate(f"Bearer {read}", "send")
    for scope in ("send", "read", "admin"):
        assert w.ring.authenticate(f"bearer {admin}", scope).key_id
    with pytest.raises(ValueError):
        w.key("root")


def test_a_revoked_key_works_until_the_cache_window_ends_then_is_refused() -> None:
    w = KeyWorld()
    key, made = w.key("send")
    assert w.ring.authenticate(f"Bearer {key}", "send").key_id == made["key_id"]
    revoked = w.admin.revoke(made["key_id"])
    assert revoked["revoked_at"] and "key_hash" not in revoked
    w.mono.advance(29)  # within the 30 s window this container still trusts its copy (no read)
    reads = w.keys.reads
    assert w.ring.authenticate(f"Bearer {key}", "send").key_id == made["key_id"]
    assert w.keys.reads == reads
    w.mono.advance(2)
    with pytest.raises(UnauthorizedError, match="revoked"):
        w.ring.authenticate(f"Bearer {key}", "send")
    # a container that had not seen the key refuses it at once
    with pytest.raises(UnauthorizedError):
        KeyRing(w.keys, clock=w.clock).authenticate(f"Bearer {key}", "send")
    with pytest.raises(NotFoundError):
        w.admin.revoke("000000000000")


def test_a_key_is_throttled_by_its_own_bucket_and_told_when_to_retry() -> None:
    w = KeyWorld(rate=100.0, burst=100)
    slow, _ = w.key("send", rate=0.5, burst=2)
    other, _ = w.key("send")
    w.ring.authenticate(f"Bearer {slow}", "send")
    w.ring.authenticate(f"Bearer {slow}", "send")
    with pytest.raises(ThrottledError) as exc:
        w.ring.authenticate(f"Bearer {slow}", "send")
    assert exc.value.retry_after == 2  # one token at 0.5/s
    assert w.ring.authenticate(f"Bearer {other}", "send")  # per key
    w.mono.advance(2)
    assert w.ring.authenticate(f"Bearer {slow}", "send")


def test_last_use_is_stamped_at_most_once_a_minute() -> None:
    w = KeyWorld()
    key, made = w.key("send")
    h = next(k.key_hash for k in w.keys.keys() if k.key_id == made["key_id"])
    assert w.keys.records[h].last_used_at is None
    w.ring.authenticate(f"Bearer {key}", "send")
    first = w.keys.records[h].last_used_at
    assert first is not None
    w.clock.advance(TOUCH_EVERY / 2)
    w.ring.authenticate(f"Bearer {key}", "send")
    assert w.keys.records[h].last_used_at == first
    w.clock.advance(TOUCH_EVERY)
    w.ring.authenticate(f"Bearer {key}", "send")
    assert w.keys.records[h].last_used_at != first


def test_created_keys_are_stored_as_a_hash_listed_without_it_and_bound_to_their_domains() -> None:
    w = KeyWorld()
    key, made = w.key("send", "read", domains=["Shop.Example", "b\u00fccher.example"])
    stored = w.keys.keys()
    assert len(stored) == 1 and isinstance(stored[0], ApiKey)
    assert key not in repr(stored[0]) and stored[0].key_id == made["key_id"]
    assert stored[0].domains == ("shop.example", "xn--bcher-kva.example")
    listed = w.admin.list()
    assert listed == [{k: v for k, v in made.items() if k != "key_hash"}]
    assert listed[0]["scopes"] == ["read", "send"]
    principal = w.ring.authenticate(f"Bearer {key}", "send")
    assert principal.domains == frozenset({"shop.example", "xn--bcher-kva.example"})


def test_records_read_older_items_leniently() -> None:
    # An item without key_id, with attributes this version does not know, and the DynamoDB
    # shapes (lists, no tuples) reads as a record; the view never shows the hash.
    key = ApiKey.from_dict({"key_hash": "ab" * 32, "scopes": ["send"], "legacy": 1, "domains": []})
    assert (key.key_id, key.scopes, key.domains) == ("ab" * 6, ("send",), None)
    # (a key stored before modes existed is live: issue 14's sandbox)
    assert key.public() == {"key_id": "ab" * 6, "name": "", "scopes": ["send"], "mode": "live"}
    domain = Domain.from_dict({"domain": "shop.example", "selectors": ["s1"], "pending_selectors": []})
    assert (domain.verified, domain.selectors, domain.pending_selectors) == (False, ("s1",), None)
