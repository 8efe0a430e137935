"""The sender's writes when DynamoDB's answer is lost (r17b), against DynamoDB Local with the real
sender and a real MX over verified TLS (sender_rig).

bootstrap's clients retry (botocore standard mode, 4 attempts) a call whose answer timed out
(read_timeout 10 s). A conditional write DynamoDB applied but whose answer was lost is sent
again, and the retry meets the state the first try made. LostUpdate plays that exactly: the real
UpdateItem, then the same request again, whose real answer from DynamoDB Local (applied again,
or a real ConditionalCheckFailedException) is what the caller sees. Before the write id
(store._update: each recipient write carries a fresh `wid` and requires another one; a refusal
that finds its own counts as written):
- the claim's retry was refused (its own lease is live): the recipient was not sent, and sat
  leased and untouched until its lease ended (the invocation's time + 30 s, up to 15 min);
- finish_attempt to deferred was applied twice (deferred is open): the attempt was recorded
  twice, so the stream gave a second `message.deferred` event and the retry schedule skipped
  a step;
- finish_attempt to bounced was refused (final): the sender took its own bounce for a duplicate
  job's and did not count the hard bounce toward the reputation breaker;
- start_scheduled's retry was refused (no longer scheduled): the due recipient was left queued,
  with no job, for the sweeper (minutes late)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sender_rig import BOUNCE_DOMAIN, VERP_KEY, AlwaysDefer, Rig
from test_store_crash_points import _events, _stream_records

from outpost.bounces.service import BounceService
from outpost.clock import iso
from outpost.records import Suspension
from outpost.reputation import Reputation, Thresholds
from outpost.store import MessageStore, ReputationStore, WebhookStore
from outpost.webhooks.records import WebhookEndpoint
from outpost_local.mx import RcptReply, build_dsn

pytestmark = pytest.mark.timeout(120)

HOUR = 3600.0


class LostUpdate:
    """The rig's DynamoDB client; the first UpdateItem that `match` picks is applied, then sent
    again (botocore's retry after its answer was lost), and the second try's answer (success or
    DynamoDB Local's real ConditionalCheckFailedException) is the caller's."""

    def __init__(self, real: Any, match: Callable[[dict], bool]) -> None:
        self.real, self.match, self.replayed = real, match, 0

    def update_item(self, **kw: Any) -> Any:
        if not self.replayed and self.match(kw):
            self.replayed += 1
            self.real.update_item(**kw)  # applied; its answer never arrives
        return self.real.update_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class Counted:
    """The reputation breaker's counters, recorded (the sender calls them; they never raise)."""

    def __init__(self) -> None:
        self.bounces: list[tuple[str, str | None]] = []
        self.sent: list[Any] = []

    def count_bounce(self, domain: str, key: str | None) -> None:
        self.bounces.append((domain, key))

    def count_sent(self, counts: Any) -> None:
        self.sent.append(counts)


def _state(value: str) -> Callable[[dict], bool]:
    """Pick the write that moves a recipient to `value` (its :s)."""
    return lambda kw: kw["ExpressionAttributeValues"].get(":s") == {"S": value}


def _lose(rig: Rig, match: Callable[[dict], bool]) -> LostUpdate:
    ddb = LostUpdate(rig.store.ddb, match)
    rig.store.ddb = ddb
    return ddb


def _items(rig: Rig, mid: str) -> dict[str, Any]:
    got = rig.store.ddb.get_item(TableName=rig.store.table, ConsistentRead=True,
                                 Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": "RCPT#000"}})
    return dict(got["Item"])


@pytest.fixture(name="lost")
def lost_fixture(engine: Rig) -> Any:
    real = engine.store.ddb
    yield engine
    engine.store.ddb = real


def test_a_claim_whose_answer_was_lost_still_sends_now(lost: Rig) -> None:
    """The claim applied, its answer lost, the retry refused by the lease it had just set: the
    recipient is this run's, delivered now, once. Before: not sent; leased with no sender until
    the lease ended (here 300 s + 30 s), the job back only then."""
    rig = lost
    mx = rig.mx("claim.test", 2)
    mid = rig.send("ann@claim.test")
    ddb = _lose(rig, lambda kw: kw["UpdateExpression"].startswith("SET #wid = :wid, lease_until")
                or kw["UpdateExpression"].startswith("SET lease_until"))
    rig.run(mid, token=None)
    assert ddb.replayed == 1
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(r["attempts"]) == 1
    assert [m.rcpt_tos for m in mx.received] == [["ann@claim.test"]]


def test_a_deferral_whose_answer_was_lost_is_one_attempt(lost: Rig) -> None:
    """finish_attempt to deferred applied, its answer lost, the retry sent again: one attempt
    recorded (one `message.deferred` event: the stream's (state, attempts) pair changes once)
    and the next try at the schedule's first step. Before: the retry was applied too (deferred
    is open): two attempts from one transaction."""
    rig = lost
    mx = rig.mx("defer.test", 2, AlwaysDefer())
    mid = rig.send("bo@defer.test")
    ddb = _lose(rig, _state("deferred"))
    rig.run(mid, token=None)
    assert ddb.replayed == 1
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and len(r["attempts"]) == 1, r["attempts"]
    assert len([c for c, _ in mx.log if c.upper().startswith("RCPT")]) == 1
    assert r["next_attempt_at"] == pytest.approx(rig.clock() + rig.settings.retry_schedule[0], abs=120)
    # What the events function publishes from DynamoDB Local's real stream of this message.
    assert _events(rig, _stream_records(rig, mid)) == [("message.queued", "bo@defer.test"),
                                                        ("message.deferred", "bo@defer.test")]


def test_a_bounce_whose_answer_was_lost_is_counted_for_the_breaker(lost: Rig) -> None:
    """finish_attempt to bounced applied, its answer lost, the retry refused (bounced is final):
    the write is the sender's own, so the hard bounce is counted toward the reputation breaker.
    Before: taken for a duplicate job's write, not counted."""
    rig = lost
    rig.mx("hard.test", 2, RcptReply(550, "5.1.1 No such user"))
    counted = Counted()
    rig.service.reputation = counted  # type: ignore[assignment]
    mid = rig.send("cy@hard.test")
    ddb = _lose(rig, _state("bounced"))
    rig.run(mid, token=None)
    assert ddb.replayed == 1
    r = rig.rcpt(mid)
    assert r["state"] == "bounced" and len(r["attempts"]) == 1
    assert counted.bounces == [("sender.test", None)]


def test_a_schedule_start_whose_answer_was_lost_sends_at_its_time(lost: Rig) -> None:
    """start_scheduled applied, its answer lost, the retry refused (no longer scheduled): the
    job that started it claims and sends it at its time. Before: left queued with no job until
    the sweeper found it (its grace later)."""
    rig = lost
    mx = rig.mx("start.test", 2)
    counted = Counted()
    rig.service.reputation = counted  # type: ignore[assignment]
    at = rig.clock() + HOUR
    mid = rig.send("di@start.test", send_at=iso(at))
    rig.clock.advance(HOUR + 1)
    ddb = _lose(rig, lambda kw: kw["ExpressionAttributeValues"].get(":sc") == {"S": "scheduled"})
    rig.run(mid, token=None)
    assert ddb.replayed == 1
    assert rig.rcpt(mid)["state"] == "delivered"
    assert [m.rcpt_tos for m in mx.received] == [["di@start.test"]]
    assert counted.sent == [[("sender.test", None, 1)]]  # counted as sent when it went out


# ---- shaping slots (delivery/shaping.py through the real store) ---------------------------------
@pytest.mark.parametrize("cap", [1, 3])
def test_a_slot_take_whose_answer_was_lost_holds_one_lease_and_counts_once(lost: Rig, cap: int) -> None:
    """take_slot applied, its answer lost, retried: the sender has its slot and the window counts
    its 2 messages once. Before: at the cap (1) the retry was refused by the sender's own lease,
    so it waited (DeferredByShaping) while its lease blocked the slot for LEASE seconds; under the
    cap (3) the retry was applied again and the window counted 4."""
    rig = lost
    provider, now = f"lost-{cap}-{time.time_ns()}", time.time()
    assert rig.store.take_slot("192.0.2.7", provider, "before", now + 60, cap, {}, now)[0]  # the item exists
    rig.store.release_slot("192.0.2.7", provider, "before", {})
    ddb = _lose(rig, lambda kw: kw["Key"]["pk"]["S"].startswith("SHAPE#") and "leases.#l = :until"
                in kw["UpdateExpression"])
    ok, state = rig.store.take_slot("192.0.2.7", provider, "lease-a", now + 60, cap, {"m": (2, 10)}, now)
    assert ddb.replayed == 1
    assert ok and state is not None
    assert rig.store.slot_state("192.0.2.7", provider) == state
    assert list(state.leases) == ["lease-a"] and state.used == {"m": 2}


def test_a_slot_release_whose_answer_was_lost_gives_back_once(lost: Rig) -> None:
    """release_slot applied (lease dropped, 3 unsent messages given back), its answer lost,
    retried: refused, the lease being gone, so the window counts the 2 sent. Before: given back
    twice, the window counted -1 and admitted 3 more messages than its limit."""
    rig = lost
    provider, now = f"lost-rel-{time.time_ns()}", time.time()
    ok, _ = rig.store.take_slot("192.0.2.7", provider, "lease-b", now + 60, 2, {"m": (5, 10)}, now)
    assert ok
    ddb = _lose(rig, lambda kw: kw["Key"]["pk"]["S"].startswith("SHAPE#") and "REMOVE" in kw["UpdateExpression"])
    rig.store.release_slot("192.0.2.7", provider, "lease-b", {"m": 3})
    assert ddb.replayed == 1
    state = rig.store.slot_state("192.0.2.7", provider)
    assert state is not None and state.leases == {} and state.used == {"m": 2}


# ---- the bounce processor ---------------------------------------------------------------------
class LostPut:
    """As LostUpdate, for the first PutItem whose sort key `match` picks."""

    def __init__(self, real: Any, match: Callable[[dict], bool]) -> None:
        self.real, self.match, self.replayed = real, match, 0

    def put_item(self, **kw: Any) -> Any:
        if not self.replayed and self.match(kw):
            self.replayed += 1
            self.real.put_item(**kw)  # applied; its answer never arrives
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class CountedBounces(Counted):
    def __init__(self) -> None:
        super().__init__()
        self.complaints: list[tuple[str, str | None]] = []

    def count_complaint(self, domain: str, key: str | None) -> None:
        self.complaints.append((domain, key))


def test_a_bounce_record_whose_answer_was_lost_is_counted_once(lost: Rig) -> None:
    """A real DSN for mail the real MX accepted; the bounce record's put applied, its answer lost,
    the retry refused: the record is this processing's own, so the hard bounce counts toward the
    breaker and the Bounce metric; the recipient is bounced and suppressed. The same report
    processed again counts nothing more. Before: taken for a redelivered report, not counted."""
    rig = lost
    mx = rig.mx("dsn.test", 2)
    mid = rig.send("ed@dsn.test")
    rig.run(mid, token=None)
    [received] = mx.received
    ddb = LostPut(rig.store.ddb, lambda kw: kw["Item"]["sk"]["S"].startswith("BOUNCE#"))
    counted, metrics = CountedBounces(), []
    service = BounceService(
        store=MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock),
        suppressions=rig.suppressions, verp_key=VERP_KEY, bounce_domain=BOUNCE_DOMAIN, clock=rig.clock,
        count=lambda name, n: metrics.append(name), reputation=counted)  # type: ignore[arg-type]
    raw = build_dsn(received, "ed@dsn.test")
    out = service.process_raw(f"inbound/s3/{mid}", raw, [received.mail_from])
    assert ddb.replayed == 1
    assert out["recipients"][0]["new"] is True, out
    assert counted.bounces == [("sender.test", None)] and metrics.count("Bounce") == 1
    assert rig.rcpt(mid)["state"] == "bounced" and rig.suppressions.get("ed@dsn.test") is not None
    again = service.process_raw(f"inbound/s3/{mid}", raw, [received.mail_from])
    assert again["recipients"][0]["new"] is False
    assert counted.bounces == [("sender.test", None)] and metrics.count("Bounce") == 1


def test_a_job_swap_whose_answer_was_lost_keeps_its_job_current(lost: Rig) -> None:
    """The run's reschedule queued its job and made it current (replace_job), the answer lost and
    retried: its own token is current, so the run does not report it superseded (the
    JobSuperseded metric); the job then runs as the current one and delivers. Before: the retry
    was refused by its own token, False."""
    rig = lost
    mx = rig.mx("swap.test", 2, RcptReply(451, "4.3.0 later", times=1))
    mid = rig.send("fi@swap.test")
    counts: list[str] = []
    rig.service.count = lambda name, n: counts.append(name)
    ddb = _lose(rig, lambda kw: kw["UpdateExpression"] == "SET job_token = :t")
    rig.run(mid, token=None)
    assert ddb.replayed == 1
    assert "JobSuperseded" not in counts, counts
    job, _ = rig.queue.sent[-1]
    assert job.token == rig.current_token(mid)
    rig.retry()
    assert rig.rcpt(mid)["state"] == "delivered" and len(mx.received) == 1


# ---- the reputation breaker's state ----------------------------------------------------------
def test_a_state_change_whose_answer_was_lost_is_reported_once(lost: Rig) -> None:
    """The breaker moves a domain to warn, then paused (40 hard bounces of 200 sent: 20%); the first
    state put's answer is lost, its retry refused (the state is no longer ok): the write is its
    own, so the change is logged and counted once (ReputationWarn; ReputationPaused follows).
    Before: False, the state read back as another writer's, no ReputationWarn."""
    rig = lost
    ddb = LostPut(rig.store.ddb, lambda kw: kw["Item"]["sk"]["S"] == "STATE")
    metrics: list[str] = []
    rep = Reputation(ReputationStore(ddb, rig.store.table), thresholds=Thresholds(min_volume=100),
                     clock=rig.clock, count=lambda name, n: metrics.append(name))
    domain = f"rep-{time.time_ns()}.test"
    rep.count_sent([(domain, None, 200)])
    for _ in range(40):
        rep.count_bounce(domain, None)
    assert ddb.replayed == 1
    assert rep.store.rep_states([f"domain:{domain}"])[f"domain:{domain}"].state == "paused"
    assert metrics.count("ReputationWarn") == 1 and metrics.count("ReputationPaused") == 1, metrics


@pytest.mark.parametrize("key", [None, "k1"])
def test_a_count_whose_answer_was_lost_is_added_once(lost: Rig, key: str | None) -> None:
    """The breaker's hourly ADD (not conditional before) applied, its answer lost, retried: 400
    sent are counted 400, for the domain and (a pair's item, through gsi1) the key; the next
    call adds as usual. Before: 800, a diluted bounce rate (or, for a bounce, a doubled one).
    Left: a count by another writer between the first try and its retry lets the retry add again
    (a busy scope, where one call's counts weigh least)."""
    rig = lost
    ddb = _lose(rig, lambda kw: kw["UpdateExpression"].startswith("ADD "))
    store = ReputationStore(ddb, rig.store.table)
    domain, hour = f"count-{time.time_ns()}.test", "2027011508"
    assert store.add_counts(f"domain:{domain}", key and f"key:{key}", hour, rig.clock(), sent=400)
    assert ddb.replayed == 1
    store.add_counts(f"domain:{domain}", key and f"key:{key}", hour, rig.clock(), sent=1, hard=1)
    scopes = [f"domain:{domain}"] + ([f"key:{key}"] if key else [])
    for scope in scopes:
        assert [(c.sent, c.hard) for c in store.counts_since(scope, "2027011500")] == [(401, 1)], scope


def test_a_suspension_whose_answer_was_lost_is_the_senders_own(lost: Rig) -> None:
    """A provider's suspension put (a throttle reply) applied, its answer lost, its retry refused
    (the record is there): True, so the sender logs the suspension it made (throttling.suspend
    then reads no winner). Before: False, taken for another container's; state unchanged either
    way (the read-back found the same record), only the warning was lost."""
    rig = lost
    ddb = LostPut(rig.store.ddb, lambda kw: kw["Item"]["pk"]["S"].startswith("SUSP#"))
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    provider = f"prov-{time.time_ns()}"
    s = Suspension("192.0.2.8", provider, rig.clock() + 600, 1, "421 4.7.0 slow down", rig.clock())
    assert store.suspend(s, replaces=None, forget_at=rig.clock() + 3600)
    assert ddb.replayed == 1
    assert store.suspension("192.0.2.8", provider) == s
    s2 = s.replace(until=rig.clock() + 1200, level=2)
    assert store.suspend(s2, replaces=s, forget_at=rig.clock() + 3600)  # the next level, as before
    assert not store.suspend(s2.replace(level=3), replaces=s, forget_at=rig.clock() + 3600)  # a stale one loses


def test_a_webhook_disable_whose_answer_was_lost_is_reported(lost: Rig) -> None:
    """The dispatcher's disable (only if enabled) applied, its answer lost, its retry refused (now
    disabled): the endpoint is answered, so the dispatcher logs and counts the disable
    (WebhookEndpointDisabled). Before: None, as for an endpoint disabled by someone else. A
    second disable is still refused."""
    rig = lost
    real = rig.store.ddb
    ddb = LostUpdate(real, lambda kw: "#e = :t" in kw.get("ConditionExpression", ""))
    hooks = WebhookStore(ddb, rig.aws.env["OUTPOST_WEBHOOKS_TABLE"])
    wid = f"wh{time.time_ns()}"
    assert hooks.add_endpoint(WebhookEndpoint(wid, "https://hooks.test/x", ("message.delivered",), iso(rig.clock())))
    got = hooks.update_endpoint(wid, only_if_enabled=True, enabled=False, disabled_at=iso(rig.clock()),
                                disabled_reason="every attempt failed")
    assert ddb.replayed == 1
    assert got is not None and got.enabled is False and got.disabled_reason == "every attempt failed"
    assert hooks.update_endpoint(wid, only_if_enabled=True, enabled=False) is None
