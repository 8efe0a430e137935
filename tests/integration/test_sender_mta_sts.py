"""MTA-STS (RFC 8461) end to end: a real HTTPS policy server with the test CA, real DNS, real MX
hosts with good and wrong certificates, and the persistent policy cache in DynamoDB (moto).
"""

from __future__ import annotations

import pytest
from sender_rig import HUB, T0, Aws, Rig, commands

from outpost.mx import MxResolver
from outpost.store import PolicyStore
from outpost.tls_policy import HttpsPolicyFetcher, MtaSts, StsPolicy

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


# == the persistent policy cache (DynamoDB): a cold container still enforces =====================


def test_mta_sts_a_cold_container_enforces_the_policy_persisted_in_dynamodb(rig: Rig) -> None:
    env = rig.aws.env
    ddb = rig.aws.client("dynamodb")
    good = rig.mx("other.test", 2)
    server = rig.sts("other.test", "version: STSv1\nmode: enforce\nmx: *.other.test\nmax_age: 86400\n",
                     pid="p1")
    assert rig.policy_server is not None

    def container() -> MtaSts:
        """What bootstrap.delivery_service() builds in a new Lambda container: fresh DNS cache,
        fresh in-memory policy cache, the shared table. Installs it as the rig's service."""
        rig.resolver = MxResolver([(HUB, rig.dns.port)], timeout=1.0, allow_private=True)
        fetch = HttpsPolicyFetcher(lambda n: list(rig.resolver.addresses(n)),
                                   ca_bundle=str(rig.pki.ca_bundle), port=rig.policy_server.port)  # type: ignore[union-attr]
        sts = MtaSts(txt=rig.resolver.txt, fetch=fetch, clock=rig.clock,
                     store=PolicyStore(ddb, env["OUTPOST_MESSAGES_TABLE"]))
        rig.build(sts)
        return sts

    # Container 1 fetches the policy, delivers, and writes the policy through to DynamoDB.
    container()
    first = rig.send("pat@other.test")
    rig.run(first)
    assert rig.rcpt(first)["state"] == "delivered" and len(good.wait_for(1)) == 1
    assert server.fetches == ["mta-sts.other.test"]
    item = ddb.get_item(TableName=env["OUTPOST_MESSAGES_TABLE"],
                        Key={"pk": {"S": "STS#other.test"}, "sk": {"S": "POLICY"}})["Item"]
    assert (item["id"], item["mode"], item["max_age"]) == ({"S": "p1"}, {"S": "enforce"}, {"N": "86400"})
    assert item["mx"] == {"L": [{"S": "*.other.test"}]}
    assert int(item["expires_at"]["N"]) == int(T0 + 86400) + 1  # the table's TTL attribute

    # An attacker strips the TXT record, takes the policy host down and points the MX at a host
    # of its own with a valid certificate for its own name.
    rig.clock.advance(3600)
    rig.dns.remove("_mta-sts.other.test", "TXT")
    server.policies.clear()
    rig.dns.remove("other.test", "MX")
    evil = rig.mx("other.test", 3, name="mx.evil.test")

    # Container 2 is cold: it knows the policy only from DynamoDB, and refuses the evil MX.
    container()
    mid = rig.send("pat@other.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    assert (r["last"]["command"], r["last"]["status"]) == ("MTA-STS", "4.7.5")
    assert evil.replies("CONNECT") == [] and evil.received == []
    assert server.fetches == ["mta-sts.other.test"]  # nothing was fetched: the store answered

    # The control: a cold container without the persistent level hands the mail to the attacker.
    rig.resolver = MxResolver([(HUB, rig.dns.port)], timeout=1.0, allow_private=True)
    assert rig.policy_server is not None
    rig.build(MtaSts(txt=rig.resolver.txt, clock=rig.clock, fetch=HttpsPolicyFetcher(
        lambda n: list(rig.resolver.addresses(n)), ca_bundle=str(rig.pki.ca_bundle),
        port=rig.policy_server.port)))
    leak = rig.send("pat@other.test")
    rig.run(leak)
    assert rig.rcpt(leak)["state"] == "delivered" and len(evil.wait_for(1)) == 1


def test_policy_store_on_dynamodb_keeps_the_newest_policy(aws: Aws) -> None:
    ddb = aws.client("dynamodb")
    store = PolicyStore(ddb, aws.env["OUTPOST_MESSAGES_TABLE"])
    assert store.get("nothing.test") is None
    newer = StsPolicy("n2", "testing", ("mx.store.test", "*.store.test"), 600, T0 + 10.5)
    store.put("Store.Test.", newer)
    assert store.get("store.test") == newer
    store.put("store.test", StsPolicy("n1", "enforce", ("mx.store.test",), 600, T0))  # older: ignored
    assert store.get("store.test") == newer
    off = StsPolicy("n3", "none", (), 600, T0 + 20)
    store.put("store.test", off)
    assert store.get("store.test") == off
    ddb.put_item(TableName=aws.env["OUTPOST_MESSAGES_TABLE"], Item={
        "pk": {"S": "STS#bad.test"}, "sk": {"S": "POLICY"}, "id": {"S": "x"}, "mode": {"S": "strict"}})
    with pytest.raises(ValueError, match="malformed"):
        store.get("bad.test")
