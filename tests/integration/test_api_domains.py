"""Domain verification (issue 8, item 26) on the local stack: real DNS server, moto behind.

GET /v1/domains/{domain} (read scope) writes nothing: not `verified`, not the rotation. The
writes belong to POST /v1/domains/{domain}/verify (admin) and to the scheduled re-check
(DomainCheckFunction, fed the EventBridge event in events/), which un-verifies a domain whose
DKIM TXT record is gone from DNS; the API then refuses mail from it (403), as SES does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_rig import call, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def stack():
    # The scheduled function un-verifies on its second failing check (the default waits 72 h;
    # the library test below covers the wait with a clock).
    st = start_stack("127.0.13", OUTPOST_DKIM_UNVERIFY_HOURS="0")
    yield st
    stop_stack(st)


def _state(domain):
    from outpost.bootstrap import dkim_secret_id, domains_table, secrets

    return domains_table().domain(domain), secrets().read_json(dkim_secret_id(domain))


def _publish(stack, records, *, purpose="dkim"):
    for r in records:
        if r["purpose"] == purpose and r["status"] != "verified":
            stack.dns.remove(r["name"], "TXT")
            stack.dns.add(r["name"], "TXT", r["value"])


def _send(stack, domain):
    return call(stack, "POST", "/v1/messages", {"from": f"a@{domain}", "to": "x@accept.test",
                                                "subject": "s", "text": "t"})


def test_get_writes_nothing_verify_does(stack):
    status, _, d = call(stack, "POST", "/v1/domains", {"domain": "readonly.example.test"})
    assert status == 201
    _publish(stack, d["records"])
    before = _state("readonly.example.test")
    status, _, d = call(stack, "GET", "/v1/domains/readonly.example.test")
    assert status == 200 and d["verified"] is False
    assert {r["status"] for r in d["records"] if r["purpose"] == "dkim"} == {"verified"}
    assert _state("readonly.example.test") == before
    assert _send(stack, "readonly.example.test")[0] == 403

    # A rotation whose records are published: GET still changes nothing.
    _, _, r = call(stack, "POST", "/v1/domains/readonly.example.test/rotate")
    _publish(stack, r["records"])
    before = _state("readonly.example.test")
    _, _, r = call(stack, "GET", "/v1/domains/readonly.example.test")
    assert len(r["pending_selectors"]) == 2 and _state("readonly.example.test") == before

    status, _, v = call(stack, "POST", "/v1/domains/readonly.example.test/verify")
    assert status == 200 and v["verified"] is True and v["pending_selectors"] == [] and v["checked_at"]
    assert _send(stack, "readonly.example.test")[0] == 202


def test_the_scheduled_check_unverifies_a_domain_whose_dkim_record_is_gone(stack):
    status, _, d = call(stack, "POST", "/v1/domains", {"domain": "fading.example.test"})
    _publish(stack, d["records"])
    assert call(stack, "POST", "/v1/domains/fading.example.test/verify")[2]["verified"] is True
    assert _send(stack, "fading.example.test")[0] == 202

    fn = stack.functions["DomainCheckFunction"]
    event = json.loads((ROOT / "events" / "scheduled_domain_check.json").read_text())
    out = fn.invoke(event)
    assert "fading.example.test" in out["verified"] and not out["errors"], out

    dkim = [r for r in d["records"] if r["purpose"] == "dkim"]
    stack.dns.remove(dkim[0]["name"], "TXT")
    out = fn.invoke(event)  # first failing check: warned, still verified
    assert "fading.example.test" in out["failing"] and "fading.example.test" in out["verified"], out
    item, _ = _state("fading.example.test")
    assert item.verified is True and item.dkim_failing_since
    out = fn.invoke(event)  # failing for longer than OUTPOST_DKIM_UNVERIFY_HOURS (0 here)
    assert "fading.example.test" in out["unverified"], out
    item, _ = _state("fading.example.test")
    assert item.verified is False and item.unverified_at
    status, _, err = _send(stack, "fading.example.test")
    assert status == 403 and err["error"]["field"] == "from"
    # Other domains were not touched.
    assert "readonly.example.test" in out["verified"]

    # The record comes back: the next check verifies the domain again.
    _publish(stack, [dict(dkim[0], status="missing")])
    out = fn.invoke(event)
    assert "fading.example.test" in out["verified"], out
    assert _send(stack, "fading.example.test")[0] == 202


def test_unverifying_waits_72_hours_and_a_dns_failure_changes_nothing(stack):
    from outpost.api.domains import DnsUnavailableError, DomainService, dns_lookup
    from outpost.bootstrap import dkim_secret_id, dns_resolver, domains_table, secrets

    now = [1_900_000_000.0]
    live = dns_lookup(dns_resolver(cache=False))  # the stack's DNS server, from OUTPOST_DNS_SERVERS
    broken = [False]

    def lookup(name, rtype):
        if broken[0]:
            raise DnsUnavailableError("SERVFAIL")
        return live(name, rtype)

    svc = DomainService(domains=domains_table(), secrets=secrets(), secret_id=dkim_secret_id, lookup=lookup,
                        sender_ip="192.0.2.1", bounce_domain="bounces.outpost.test", region="us-east-1",
                        clock=lambda: now[0])
    d = svc.create("slow.example.test")
    _publish(stack, d["records"])
    assert svc.verify("slow.example.test")["verified"] is True
    dkim = [r for r in d["records"] if r["purpose"] == "dkim"]
    stack.dns.remove(dkim[1]["name"], "TXT")
    assert svc.verify("slow.example.test")["dkim_failing_since"]
    broken[0] = True
    now[0] += 100 * 3600  # DNS down: no definite answer, so no verdict either way
    assert svc.verify("slow.example.test")["verified"] is True
    broken[0] = False
    now[0] -= 100 * 3600
    now[0] += 71 * 3600
    assert svc.verify("slow.example.test")["verified"] is True
    now[0] += 2 * 3600
    v = svc.verify("slow.example.test")
    assert v["verified"] is False and v["unverified_at"]
