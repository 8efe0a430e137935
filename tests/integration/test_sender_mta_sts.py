"""MTA-STS (RFC 8461) end to end: a real HTTPS policy server with the test CA, real DNS, real MX
hosts with good and wrong certificates.
"""

from __future__ import annotations

import pytest
from sender_rig import Rig, commands

pytestmark = pytest.mark.timeout(90)

# == MTA-STS (RFC 8461) ========================================================================

ENFORCE = "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 86400\n"


def test_mta_sts_enforce_defers_on_a_wrong_certificate(rig: Rig) -> None:
    mx = rig.mx("sts.test", 2, tls="untrusted")
    rig.sts("sts.test", ENFORCE)
    mid = rig.send("hu@sts.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    a = r["attempts"][0]
    assert (a["command"], a["status"]) == ("STARTTLS", "4.7.5") and "did not verify" in a["text"]
    assert a["mta_sts"] == {"mode": "enforce", "id": "20240101"}
    assert mx.received == [] and commands(mx, "MAIL") == []


def test_mta_sts_enforce_delivers_over_verified_tls(rig: Rig) -> None:
    mx = rig.mx("sts.test", 2)
    rig.sts("sts.test", ENFORCE)
    mid = rig.send("ivy@sts.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and r["attempts"][0]["tls"]["verified"] is True
    assert r["attempts"][0]["mta_sts"]["mode"] == "enforce"
    assert mx.wait_for(1)[0].tls


def test_mta_sts_enforce_skips_mx_hosts_outside_the_policy(rig: Rig) -> None:
    outside = rig.mx("sts.test", 2, pref=10, name="mx.elsewhere.test")  # not *.sts.test
    inside = rig.mx("sts.test", 3, pref=20)
    rig.sts("sts.test", ENFORCE)
    mid = rig.send("jo@sts.test")
    rig.run(mid)
    assert rig.rcpt(mid)["attempts"][0]["mx"] == "mx3.sts.test"
    assert outside.replies("CONNECT") == [] and len(inside.wait_for(1)) == 1


def test_mta_sts_enforce_defers_when_no_mx_matches(rig: Rig) -> None:
    mx = rig.mx("sts.test", 2, name="mx.elsewhere.test")
    rig.sts("sts.test", ENFORCE)
    mid = rig.send("kai@sts.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    assert (r["last"]["command"], r["last"]["status"]) == ("MTA-STS", "4.7.5")
    assert mx.replies("CONNECT") == []


def test_mta_sts_testing_records_but_delivers(rig: Rig) -> None:
    mx = rig.mx("testing.test", 2, tls="untrusted", name="mx2.testing.test")
    rig.sts("testing.test", "version: STSv1\nmode: testing\nmx: *.testing.test\nmax_age: 600\n", pid="t1")
    mid = rig.send("lou@testing.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered"
    a = r["attempts"][0]
    assert a["tls"]["verified"] is False
    assert a["mta_sts"] == {"mode": "testing", "id": "t1", "violation": "certificate did not verify"}
    assert mx.wait_for(1)[0].tls


def test_mta_sts_policy_is_cached_by_id_and_max_age(rig: Rig) -> None:
    rig.mx("sts.test", 2)
    server = rig.sts("sts.test", "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 3600\n", pid="a1")
    for _ in range(2):
        rig.run(rig.send("mo@sts.test"))
    assert server.fetches == ["mta-sts.sts.test"]  # the second message used the cache
    rig.sts("sts.test", ENFORCE, pid="a2")  # a new id: fetch again
    rig.run(rig.send("mo@sts.test"))
    assert len(server.fetches) == 2
    rig.clock.advance(86400 + 1)  # max_age of the new policy ran out
    rig.run(rig.send("mo@sts.test"))
    assert len(server.fetches) == 3


def test_mta_sts_cached_enforce_survives_a_policy_outage(rig: Rig) -> None:
    mx = rig.mx("sts.test", 2, tls="untrusted")
    server = rig.sts("sts.test", ENFORCE, pid="b1")
    rig.run(rig.send("ned@sts.test"))
    # An attacker strips the TXT record and breaks the policy host: the cached policy holds.
    rig.dns.remove("_mta-sts.sts.test", "TXT")
    server.policies.clear()
    mid = rig.send("ned@sts.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["last"]["status"] == "4.7.5"
    assert mx.received == []


