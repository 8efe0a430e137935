"""The reputation breaker's store (issue 11 item 6, review gaps) on DynamoDB Local, the table
provisioned from template.yaml (gsi1 included):

- one send is one DynamoDB write for its domain and its key (was two): the DynamoDB requests
  of POST /v1/messages' service path are counted from the boto3 client, and both scopes read
  the count back (the domain from its partition, the key through gsi1);
- counts stored in the layout before pairs (one item per scope) are still read;
- the sweeper's periodic evaluation finds the active scopes without a Scan, clears a warn
  whose rates fell and keeps a paused scope paused.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import pytest

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.models import SendRequest
from outpost.records import Domain
from outpost.reputation import Reputation, Thresholds, days_back, domain_scope, hour_of, key_scope
from outpost.store import DomainStore, MessageStore, ReputationStore, SuppressionStore
from outpost.sweeper import Sweeper
from tests.fakes.store import FakeClock, FakeJobs, FakeMessages

pytestmark = pytest.mark.timeout(180)


def _counted(aws: Any) -> tuple[Any, Counter[str]]:
    """A DynamoDB client whose requests are counted by operation."""
    ddb = aws.client("dynamodb")
    ops: Counter[str] = Counter()
    ddb.meta.events.register("before-call.dynamodb", lambda model, **kw: ops.update([model.name]))
    return ddb, ops


def _world(aws: Any, clock: FakeClock) -> tuple[Reputation, ReputationStore, Counter[str], Any]:
    ddb, ops = _counted(aws)
    store = ReputationStore(ddb, aws.env["OUTPOST_MESSAGES_TABLE"])
    return Reputation(store, thresholds=Thresholds(min_volume=100), clock=clock), store, ops, ddb


def test_one_send_costs_one_write_for_its_domain_and_key(aws: Any) -> None:
    clock = FakeClock()
    rep, _, ops, ddb = _world(aws, clock)
    domain, key = f"rep-{secrets.token_hex(3)}.test", f"k{secrets.token_hex(3)}"
    env = aws.env
    DomainStore(ddb, env["OUTPOST_DOMAINS_TABLE"]).put_domain(Domain(domain=domain, verified=True))
    api = SendService(store=MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"]),
                      suppressions=SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]), queue=FakeJobs(),
                      domains=DomainStore(ddb, env["OUTPOST_DOMAINS_TABLE"]), clock=clock, reputation=rep)
    principal = Principal(key_id=key, name="it", scopes=frozenset({"send"}), domains=None)
    sends = 20
    ops.clear()
    for i in range(sends):
        api.send_one(SendRequest.model_validate({"from": f"news@{domain}", "to": f"r{i}@accept.test",
                                                 "subject": "s", "text": "t"}), principal=principal)
    total = sum(ops.values())
    # The breaker's share: one UpdateItem per send, plus the pair's first count of the hour
    # filing its two scopes under the day (PutItem each), plus its state read (BatchGetItem).
    # The create's own: a PutItem for the recipient and one for META (store.create, issue 15).
    assert ops["UpdateItem"] == sends, ops
    assert ops["PutItem"] == 2 + 2 * sends, ops
    print(f"\n{sends} sends, DynamoDB requests by operation: {dict(ops)}; {total / sends:.2f} per send, "
          f"of which reputation counts {(ops['UpdateItem'] + ops['PutItem']) / sends:.2f}")
    d, k = domain_scope(domain), key_scope(key)
    assert rep.windows(d)["24h"].sent == sends == rep.windows(k)["24h"].sent
    assert {d, k} <= set(rep.store.active_scopes(days_back(clock(), 1)))


def test_counts_in_the_layout_before_pairs_are_still_read(aws: Any) -> None:
    clock = FakeClock()
    rep, store, _, ddb = _world(aws, clock)
    domain, key = f"old-{secrets.token_hex(3)}.test", f"k{secrets.token_hex(3)}"
    d, k = domain_scope(domain), key_scope(key)
    table = aws.env["OUTPOST_MESSAGES_TABLE"]
    for scope in (d, k):  # as the store wrote them before: one item per scope
        ddb.put_item(TableName=table, Item={"pk": {"S": f"REP#{scope}"}, "sk": {"S": f"H#{hour_of(clock() - 7200)}"},
                                            "sent": {"N": "50"}, "hard": {"N": "2"}})
    rep.count_sent([(domain, key, 30)])
    rep.count_sent([(domain, None, 5), (None, key, 7)])
    rep.count_bounce(domain, key)
    assert (rep.windows(d)["7d"].sent, rep.windows(d)["7d"].hard) == (85, 3)
    assert (rep.windows(k)["7d"].sent, rep.windows(k)["7d"].hard) == (87, 3)
    # An hour outside the window does not count.
    assert store.counts_since(k, hour_of(clock() + 3600)) == []


def test_the_sweep_clears_a_warn_whose_rates_fell_and_keeps_a_pause(aws: Any) -> None:
    clock = FakeClock(1_800_000_000.0 + 86400 * secrets.randbelow(1000))  # a day of its own
    rep, store, ops, _ = _world(aws, clock)
    warned, paused = f"warn-{secrets.token_hex(3)}.test", f"pause-{secrets.token_hex(3)}.test"
    kw = f"k{secrets.token_hex(3)}"
    scopes = [domain_scope(warned), key_scope(kw), domain_scope(paused)]
    rep.count_sent([(warned, kw, 100), (paused, None, 100)])
    for _ in range(6):
        rep.count_bounce(warned, kw)
    for _ in range(10):
        rep.count_bounce(paused, None)
    states = store.rep_states(scopes)
    assert [states[s].state for s in scopes] == ["warn", "warn", "paused"]
    clock.advance(3600)
    rep.count_sent([(warned, kw, 900), (paused, None, 900)])  # rates fall; no bad event
    sweeper = Sweeper(store=FakeMessages(), queue=FakeJobs(), clock=clock, reputation=rep)
    ops.clear()
    out = sweeper.handle_schedule({})
    assert out["reputation_scopes"] == 3 and out["reputation_moved"] == 2 and out["reputation_failed"] == 0
    states = store.rep_states(scopes)
    assert [states[s].state for s in scopes] == ["ok", "ok", "paused"]
    assert "Scan" not in ops  # the active scopes are a Query per day
    # Nine days later the paused domain's counts are gone, and it is still on the list.
    for _ in range(9):
        clock.advance(86400)
        sweeper.handle_schedule({})
    assert domain_scope(paused) in store.active_scopes(days_back(clock(), 1))
    assert store.rep_states([domain_scope(paused)])[domain_scope(paused)].state == "paused"
