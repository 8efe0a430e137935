"""The reputation circuit breaker (issue 11 item 6) with in-memory fakes and a clock moved by
hand: rolling windows, the minimum volume, the thresholds, the state's moves, the API's 403,
the sender's hold and the bounce processor's counts. The same path runs against the local
stack in tests/integration/test_api_reputation.py."""

from __future__ import annotations

import json

import pytest

from outpost.api.auth import KeyRing, Principal
from outpost.api.reputation import ReputationApi
from outpost.api.routes import build_app
from outpost.api.service import QueryService, SendService
from outpost.bounces.service import BounceService
from outpost.bounces.verp import make_return_path
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.errors import SendingPausedError
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from outpost.records import ReputationCounts
from outpost.reputation import (
    PauseCheck,
    Reputation,
    Thresholds,
    domain_scope,
    hour_of,
    judge_rates,
    key_scope,
    windows,
)
from outpost.sweeper import Sweeper
from tests.fakes.store import (
    FakeApiKeys,
    FakeClock,
    FakeDomains,
    FakeJobs,
    FakeMessages,
    FakeReputations,
    FakeSuppressions,
)
from tests.fakes.transport import FakeConnector, Peer

SENDER = "shop.test"
KEY = Principal(key_id="k1", name="unit", scopes=frozenset({"send", "read"}), domains=None)
T = Thresholds(min_volume=100)


# ---- the pure parts ----------------------------------------------------------------------------

def _bucket(clock: FakeClock, hours_ago: float, sent: int = 0, hard: int = 0, complaints: int = 0) -> ReputationCounts:
    return ReputationCounts("domain:shop.test", hour_of(clock() - hours_ago * 3600), sent, hard, complaints)


def test_windows_hold_the_last_24_and_168_hours() -> None:
    clock = FakeClock()
    ws = windows([_bucket(clock, 0, 100, 1), _bucket(clock, 23, 100, 2), _bucket(clock, 24, 100, 4),
                  _bucket(clock, 167, 100, 8), _bucket(clock, 168, 100, 16)], clock(), 100)
    assert (ws["24h"].sent, ws["24h"].hard) == (200, 3)
    assert (ws["7d"].sent, ws["7d"].hard) == (400, 15)  # the bucket 168 hours ago is out
    assert ws["24h"].bounce_rate == 0.015


def test_a_rate_counts_only_over_the_minimum_volume() -> None:
    clock = FakeClock()
    few = windows([_bucket(clock, 0, sent=99, hard=50)], clock(), 100)
    assert not few["24h"].counts and judge_rates(few, T).state == "ok"  # 50% of 99: not representative
    enough = windows([_bucket(clock, 0, sent=100, hard=50)], clock(), 100)
    assert enough["24h"].counts and judge_rates(enough, T).state == "paused"


@pytest.mark.parametrize(("hard", "complaints", "state"), [
    (4, 0, "ok"), (5, 0, "warn"), (9, 0, "warn"), (10, 0, "paused"),  # 5% / 10% of 100
])
def test_bounce_thresholds(hard: int, complaints: int, state: str) -> None:
    clock = FakeClock()
    ws = windows([_bucket(clock, 0, sent=100, hard=hard, complaints=complaints)], clock(), 100)
    assert judge_rates(ws, T).state == state


@pytest.mark.parametrize(("complaints", "state"), [(0, "ok"), (1, "warn"), (4, "warn"), (5, "paused")])
def test_complaint_thresholds(complaints: int, state: str) -> None:
    clock = FakeClock()  # 0.1% warn, 0.5% pause of 1000
    ws = windows([_bucket(clock, 0, sent=1000, complaints=complaints)], clock(), 100)
    found = judge_rates(ws, T)
    assert found.state == state
    if state == "paused":
        assert found.threshold == 0.005 and found.rate == 0.005 and "complaint rate 0.50%" in (found.reason or "")


def test_the_7_day_window_can_pause_when_the_last_day_is_quiet() -> None:
    clock = FakeClock()
    ws = windows([_bucket(clock, 0, sent=10), _bucket(clock, 48, sent=200, hard=30)], clock(), 100)
    found = judge_rates(ws, T)
    assert found.state == "paused" and "over 7d" in (found.reason or "")


# ---- counts and states -------------------------------------------------------------------------

class Breaker:
    def __init__(self, thresholds: Thresholds = T) -> None:
        self.clock = FakeClock()
        self.store = FakeReputations()
        self.counts: dict[str, int] = {}
        self.gauges: dict[tuple[str, str, str], float] = {}  # (metric, dimension, value) -> rate
        self.rep = Reputation(self.store, thresholds=thresholds, clock=self.clock,
                              count=lambda n, v: self.counts.__setitem__(n, self.counts.get(n, 0) + v),
                              gauge=lambda n, v, dims: self.gauges.update({(n, *kv): v for kv in dims.items()}))

    def state(self, scope: str) -> str:
        st = self.store.states.get(scope)
        return st.state if st else "ok"


def test_a_batch_of_sends_costs_one_update_for_its_domain_and_key() -> None:
    b = Breaker()
    b.rep.count_sent([(SENDER, "k1", 2)] * 500)
    assert b.store.adds == 1  # one ADD on the pair's item: not one per message, nor per scope
    ws = b.rep.windows(domain_scope(SENDER))
    assert ws["24h"].sent == 1000 and b.rep.windows(key_scope("k1"))["7d"].sent == 1000


def test_the_breaker_moves_ok_warn_paused_and_only_an_admin_resumes() -> None:
    b = Breaker()
    d, k = domain_scope(SENDER), key_scope("k1")
    b.rep.count_sent([(SENDER, "k1", 100)])
    for _ in range(4):
        b.rep.count_bounce(SENDER, "k1")
    assert b.state(d) == "ok" and b.state(k) == "ok"
    b.rep.count_bounce(SENDER, "k1")  # 5%
    assert b.state(d) == "warn" and b.state(k) == "warn"
    assert b.store.states[d].since is not None and "5.00%" in (b.store.states[d].reason or "")
    assert b.gauges[("BounceRate", "Domain", SENDER)] == 0.05 and b.gauges[("BounceRate", "ApiKey", "k1")] == 0.05
    for _ in range(5):
        b.rep.count_bounce(SENDER, "k1")  # 10%
    assert b.state(d) == "paused" and b.counts["ReputationPaused"] == 2
    paused_since = b.store.states[d].since
    b.clock.advance(3600)
    b.rep.count_sent([(SENDER, "k1", 10_000)])  # rates far below now: still paused
    b.rep.count_complaint(SENDER, "k1")
    assert b.state(d) == "paused" and b.store.states[d].since == paused_since
    st = b.rep.resume(d, "key:admin")
    assert st is not None and st.state == "ok" and st.resumed_by == "key:admin" and st.resumed_at
    assert b.rep.resume(d, "key:admin") is None  # not paused any more
    assert b.state(k) == "paused"  # the key is its own scope


def test_warn_returns_to_ok_when_the_rates_fall_and_a_resumed_scope_trips_again() -> None:
    b = Breaker()
    d = domain_scope(SENDER)
    b.rep.count_sent([(SENDER, None, 100)])
    for _ in range(6):
        b.rep.count_bounce(SENDER, None)
    assert b.state(d) == "warn"
    b.rep.count_sent([(SENDER, None, 900)])
    b.rep.count_bounce(SENDER, None)  # 7 of 1000
    assert b.state(d) == "ok"
    for _ in range(100):
        b.rep.count_bounce(SENDER, None)
    assert b.state(d) == "paused"
    b.rep.resume(d, "admin")
    b.rep.count_bounce(SENDER, None)  # still over 10%: the next hard bounce pauses it again
    assert b.state(d) == "paused"


def test_a_failing_store_never_fails_a_count_or_a_send() -> None:
    b = Breaker()
    b.store.fail = True
    b.rep.count_sent([(SENDER, "k1", 1)])
    b.rep.count_bounce(SENDER, "k1")
    b.rep.check_send(SENDER, "k1")  # no exception: the send goes through
    assert b.counts["ReputationStoreError"] == 3  # the sent count, the bounce count (one each), 1 read


# ---- the API -----------------------------------------------------------------------------------

def _request(**extra: object) -> SendRequest:
    return SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": ["a@ok.test", "b@ok.test"],
                                       "subject": "Hello", "text": "Hi.", **extra})


def _paused_world() -> tuple[Breaker, SendService, FakeMessages]:
    b = Breaker()
    store = FakeMessages()
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                      domains=FakeDomains(SENDER), clock=b.clock, reputation=b.rep)
    api.send_one(_request(), principal=KEY)  # 2 sent: under the volume
    b.rep.count_sent([(SENDER, "other", 98)])
    for _ in range(10):
        b.rep.count_bounce(SENDER, "other")
    return b, api, store


def test_sends_are_counted_with_their_key_and_a_paused_domain_is_refused() -> None:
    b, api, store = _paused_world()
    [meta] = [m.meta for m in store.messages.values()]
    assert meta.key_id == "k1"
    assert b.rep.windows(key_scope("k1"))["24h"].sent == 2
    assert b.state(domain_scope(SENDER)) == "paused"
    with pytest.raises(SendingPausedError) as exc:
        api.send_one(_request(), principal=KEY)
    e = exc.value
    assert (e.status, e.code, e.field) == (403, "sending_paused", "from")
    assert "'shop.test'" in e.message and "10.00%" in e.message and ">= 10.00%" in e.message
    assert len(store.messages) == 1  # nothing stored


def test_a_paused_domain_in_a_batch_is_a_403_item() -> None:
    _, api, _ = _paused_world()
    out = api._run_batch([_request().model_dump(mode="json", by_alias=True)], KEY).answer
    assert out["accepted"] == 0 and out["results"][0]["status"] == 403
    assert out["results"][0]["error"]["code"] == "sending_paused"


def test_a_batch_reads_the_states_once_per_domain_and_key() -> None:
    b = Breaker()
    reads: list[list[str]] = []
    real = b.store.rep_states
    b.store.rep_states = lambda scopes: reads.append(list(scopes)) or real(scopes)  # type: ignore[method-assign]
    api = SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),
                      domains=FakeDomains(SENDER), clock=b.clock, reputation=b.rep)
    out = api._run_batch([_request().model_dump(mode="json", by_alias=True)] * 50, KEY).answer
    assert out["accepted"] == 50 and reads == [[domain_scope(SENDER), key_scope("k1")]]
    assert b.store.adds == 1 and b.rep.windows(domain_scope(SENDER))["24h"].sent == 100


def _event(method: str, path: str, key: str) -> dict:
    return {"httpMethod": method, "path": path, "resource": "/{proxy+}", "headers": {"Authorization": f"Bearer {key}"},
            "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
            "body": None, "isBase64Encoded": False, "requestContext": {"stage": "prod"}}


def test_the_routes_answer_in_the_one_error_shape_and_show_each_key_its_own() -> None:
    b, _, store = _paused_world()
    keys = FakeApiKeys()
    ring = KeyRing(keys)
    admin, _ = ring.create("admin", ["admin"])
    reader, reader_rec = ring.create("reader", ["read"], domains=[SENDER])
    domains = FakeDomains(SENDER, "other.test")
    app = build_app(keys=ring, sender=SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                                                  domains=domains, clock=b.clock, reputation=b.rep),
                    queries=QueryService(store=store, suppressions=FakeSuppressions()),
                    reputation=ReputationApi(b.rep, domains=domains, keys=keys))

    def call(method: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict]:
        ev = _event(method, path, key)
        if body is not None:
            ev["body"] = json.dumps(body)
        r = app.resolve(ev, None)
        return r["statusCode"], json.loads(r["body"])

    status, out = call("POST", "/v1/messages", admin, _request().model_dump(mode="json", by_alias=True))
    assert status == 403 and out["error"]["code"] == "sending_paused" and out["error"]["field"] == "from"
    status, out = call("GET", "/v1/reputation", reader)
    assert status == 200
    assert [(i["type"], i["name"]) for i in out["items"]] == [("domain", SENDER), ("key", reader_rec["key_id"])]
    [dom, _] = out["items"]
    assert dom["state"] == "paused" and dom["windows"]["24h"] == {
        "sent": 100, "hard_bounces": 10, "complaints": 0, "bounce_rate": 0.1, "complaint_rate": 0.0, "counts": True}
    assert out["thresholds"]["pause_bounce_rate"] == 0.10 and out["thresholds"]["min_volume"] == 100
    status, out = call("GET", "/v1/reputation", admin)
    assert status == 200 and {i["name"] for i in out["items"] if i["type"] == "domain"} == {SENDER, "other.test"}
    status, out = call("POST", f"/v1/reputation/{SENDER}/resume", reader)
    assert status == 403 and out["error"]["code"] == "forbidden"
    status, out = call("POST", "/v1/reputation/unknown.test/resume", admin)
    assert status == 404 and out["error"]["field"] == "domain"
    status, out = call("POST", f"/v1/reputation/{SENDER}/resume", admin)
    assert status == 200 and out["state"] == "ok" and out["resumed_by"].startswith("key:")
    status, out = call("POST", f"/v1/reputation/{SENDER}/resume", admin)
    assert status == 409
    status, out = call("POST", "/v1/messages", admin, _request().model_dump(mode="json", by_alias=True))
    assert status == 202


# ---- the sender's hold ---------------------------------------------------------------------------

class FakeSigner:
    def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=unit; b=fake\r\n"


def test_queued_mail_of_a_paused_domain_is_held_without_an_attempt_then_delivered_after_resume() -> None:
    b = Breaker()
    store, jobs = FakeMessages(), FakeJobs()
    peer = Peer()
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                      domains=FakeDomains(SENDER), clock=b.clock, reputation=b.rep)
    mid = api.send_one(_request(), principal=KEY)["id"]
    b.rep.count_sent([(SENDER, None, 98)])
    for _ in range(10):
        b.rep.count_bounce(SENDER, None)
    assert b.state(domain_scope(SENDER)) == "paused"
    now = [0.0]
    service = DeliveryService(
        settings=Settings.from_env({"OUTPOST_REPUTATION_RECHECK": "60"}), store=store,
        suppressions=FakeSuppressions(), queue=jobs,
        resolve_mx=lambda d: [MxHost(f"mx.{d}", 10, ("192.0.2.1",))],
        connector=FakeConnector({"192.0.2.1": peer}), signer_for=lambda d: FakeSigner(),
        return_path=lambda m, i: f"b+{m}.{i}@bounces.{SENDER}", clock=b.clock, rng=lambda: 0.25,
        paused=PauseCheck(b.store, ttl=10, monotonic=lambda: now[0]), reputation=b.rep)

    def run(job: QueueJob) -> None:
        event = {"Records": [{"messageId": "sqs-1", "body": job.model_dump_json()}]}
        assert service.handle_sqs_event(event, lambda: 600_000)["batchItemFailures"] == []

    run(QueueJob(message_id=mid))
    assert peer.log == [] and peer.accepted == []  # no session at all
    stored = store.load(mid)
    assert stored is not None
    for r in stored.recipients:
        assert r.state is RecipientState.DEFERRED and r.attempts == () and r.next_attempt_at == b.clock() + 60
        assert r.waiting is not None and (r.waiting.reason, r.waiting.provider) == ("paused", "domain:shop.test")
    view = QueryService(store=store, suppressions=FakeSuppressions()).message(mid)
    assert view["recipients"][0]["waiting"]["reason"] == "paused"
    [(job, delay)] = jobs.sent
    assert delay == 60 and job.attempt == QueueJob(message_id=mid).attempt  # a hold is not a delivery run
    b.rep.resume(domain_scope(SENDER), "admin")
    b.clock.advance(60)
    now[0] += 10  # the cached "paused" answer has aged out
    run(job)
    stored = store.load(mid)
    assert stored is not None
    assert [r.state for r in stored.recipients] == [RecipientState.DELIVERED] * 2
    assert all(r.waiting is None and len(r.attempts) == 1 for r in stored.recipients)
    assert len(peer.accepted) == 2


def test_a_failing_state_read_never_blocks_delivery() -> None:
    reps = FakeReputations()
    check = PauseCheck(reps, ttl=10, monotonic=lambda: 0.0)
    reps.fail = True
    assert check.paused(SENDER, "k1") is None


def test_a_hard_smtp_bounce_is_counted_once_for_its_domain_and_key() -> None:
    b = Breaker()
    store, peer = FakeMessages(), Peer(replies={"RCPT": (550, "5.1.1 no such user")})
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                      domains=FakeDomains(SENDER), clock=b.clock, reputation=b.rep)
    mid = api.send_one(_request(), principal=KEY)["id"]
    service = DeliveryService(
        settings=Settings(), store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
        resolve_mx=lambda d: [MxHost(f"mx.{d}", 10, ("192.0.2.1",))],
        connector=FakeConnector({"192.0.2.1": peer}), signer_for=lambda d: FakeSigner(),
        return_path=lambda m, i: f"b+{m}.{i}@bounces.{SENDER}", clock=b.clock,
        paused=PauseCheck(b.store), reputation=b.rep)
    event = {"Records": [{"messageId": "sqs-1", "body": QueueJob(message_id=mid).model_dump_json()}]}
    service.handle_sqs_event(event, lambda: 600_000)
    service.handle_sqs_event(event, lambda: 600_000)  # a duplicate job: nothing moves, nothing counted
    for scope in (domain_scope(SENDER), key_scope("k1")):
        w = b.rep.windows(scope)["24h"]
        assert (w.sent, w.hard) == (2, 2)


# ---- the bounce processor -------------------------------------------------------------------------

def _report(rcpt: str, *, complaint: bool = False) -> bytes:
    if complaint:
        return ("From: abuse@isp.test\r\nTo: b@x\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
                'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
                "--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
                "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
                f"Feedback-Type: abuse\r\nUser-Agent: isp/1\r\nVersion: 1\r\nOriginal-Rcpt-To: {rcpt}\r\n\r\n"
                f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@{SENDER}\r\nTo: {rcpt}\r\n\r\n--b--\r\n"
                ).encode()
    return ("From: MAILER-DAEMON@mx.test\r\nTo: b@x\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--b--\r\n").encode()


def test_dsn_hard_bounces_and_complaints_are_counted_once_per_report() -> None:
    b = Breaker()
    store, sup = FakeMessages(), FakeSuppressions()
    api = SendService(store=store, suppressions=sup, queue=FakeJobs(), domains=FakeDomains(SENDER),
                      clock=b.clock, reputation=b.rep)
    mid = api.send_one(_request(), principal=KEY)["id"]
    bounces = BounceService(store=store, suppressions=sup, verp_key=b"k", bounce_domain="bounces.test",
                            clock=b.clock, reputation=b.rep)
    t0, t1 = (make_return_path(b"k", mid, i, "bounces.test") for i in (0, 1))
    for _ in range(2):  # the same report redelivered counts once
        bounces.process_raw("inbound/1", _report("a@ok.test"), [t0])
        bounces.process_raw("inbound/2", _report("b@ok.test", complaint=True), [t1])
    for scope in (domain_scope(SENDER), key_scope("k1")):
        w = b.rep.windows(scope)["24h"]
        assert (w.sent, w.hard, w.complaints) == (2, 1, 1), scope


def test_mail_held_by_a_pause_expires_at_its_lifetime_end_naming_the_pause() -> None:
    """Review (issue 11): a paused domain never resumed. Its queued mail is held recheck by
    recheck, never past the message's lifetime, and then expires (4.4.7) saying it expired
    while sending was paused (before: 'last reply: none', with no word of the pause)."""
    b = Breaker()
    store, jobs = FakeMessages(), FakeJobs()
    peer = Peer()
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                      domains=FakeDomains(SENDER), clock=b.clock, reputation=b.rep)
    mid = api.send_one(_request(), principal=KEY)["id"]
    b.rep.count_sent([(SENDER, None, 98)])
    for _ in range(10):
        b.rep.count_bounce(SENDER, None)
    service = DeliveryService(
        settings=Settings.from_env({"OUTPOST_REPUTATION_RECHECK": "600", "OUTPOST_MAX_LIFETIME": "1500"}),
        store=store, suppressions=FakeSuppressions(), queue=jobs,
        resolve_mx=lambda d: [MxHost(f"mx.{d}", 10, ("192.0.2.1",))],
        connector=FakeConnector({"192.0.2.1": peer}), signer_for=lambda d: FakeSigner(),
        return_path=lambda m, i: f"b+{m}.{i}@bounces.{SENDER}", clock=b.clock, rng=lambda: 0.25,
        paused=PauseCheck(b.store, ttl=0, monotonic=b.clock), reputation=b.rep)
    end = b.clock() + 1500
    job: QueueJob | None = QueueJob(message_id=mid)
    for _ in range(6):
        assert job is not None
        if job.not_before:
            b.clock.now = max(b.clock(), job.not_before)
        event = {"Records": [{"messageId": "sqs-1", "body": job.model_dump_json()}]}
        assert service.handle_sqs_event(event, lambda: 600_000)["batchItemFailures"] == []
        stored = store.load(mid)
        assert stored is not None
        if not any(r.is_open for r in stored.recipients):
            break
        assert all(r.next_attempt_at is not None and r.next_attempt_at <= end for r in stored.recipients)
        job = jobs.sent.pop()[0] if jobs.sent else None
    assert peer.accepted == []
    stored = store.load(mid)
    assert stored is not None
    for r in stored.recipients:
        assert r.state is RecipientState.EXPIRED and r.waiting is None
        assert r.last is not None and r.last["status"] == "4.4.7"
        assert "paused" in r.last["text"], r.last
    assert b.clock() <= end + 2  # not a second early, nor long after


# ---- the periodic evaluation (the sweeper's schedule) ------------------------------------------

def _sweeper(b: Breaker) -> Sweeper:
    return Sweeper(store=FakeMessages(), queue=FakeJobs(), clock=b.clock, reputation=b.rep,
                   count=lambda n, v: b.counts.__setitem__(n, b.counts.get(n, 0) + v))


def test_one_send_costs_one_update_for_both_scopes() -> None:
    b = Breaker()
    for _ in range(10):
        b.rep.count_sent([(SENDER, "k1", 1)])
    assert b.store.adds == 10  # was 20: one ADD for the domain and one for the key, per send
    assert b.rep.windows(domain_scope(SENDER))["24h"].sent == 10 == b.rep.windows(key_scope("k1"))["24h"].sent
    b.rep.count_sent([(SENDER, "k2", 5), ("other.test", "k1", 3)])
    assert b.rep.windows(domain_scope(SENDER))["24h"].sent == 15
    assert b.rep.windows(key_scope("k1"))["24h"].sent == 13 and b.rep.windows(key_scope("k2"))["24h"].sent == 5


def test_a_warn_clears_by_itself_on_the_schedule_when_the_rates_fall() -> None:
    b = Breaker()
    d, k = domain_scope(SENDER), key_scope("k1")
    b.rep.count_sent([(SENDER, "k1", 100)])
    for _ in range(6):
        b.rep.count_bounce(SENDER, "k1")
    assert b.state(d) == "warn" and b.state(k) == "warn"
    b.clock.advance(3600)
    b.rep.count_sent([(SENDER, "k1", 900)])  # 6 of 1000: under 5%, but no bad event re-judges it
    assert b.state(d) == "warn"
    b.gauges.clear()
    out = _sweeper(b).handle_schedule({"time": "2027-01-15T08:00:00Z"})
    assert b.state(d) == "ok" and b.state(k) == "ok"
    assert (out["reputation_scopes"], out["reputation_moved"], out["reputation_failed"]) == (2, 2, 0)
    # The rates are published per scope, with its own dimension (the alarms' input).
    assert b.gauges == {("BounceRate", "Domain", SENDER): 0.006, ("ComplaintRate", "Domain", SENDER): 0.0,
                        ("BounceRate", "ApiKey", "k1"): 0.006, ("ComplaintRate", "ApiKey", "k1"): 0.0}


def test_a_warn_clears_when_its_counts_age_out_of_the_7_day_window() -> None:
    b = Breaker()
    d = domain_scope(SENDER)
    b.rep.count_sent([(SENDER, None, 100)])
    for _ in range(6):
        b.rep.count_bounce(SENDER, None)
    b.clock.advance(6 * 86400)
    _sweeper(b).handle_schedule({})
    assert b.state(d) == "warn"  # still 6% over the 7-day window
    b.clock.advance(86400 + 3600)  # the last count's hour has left the window
    b.gauges.clear()
    _sweeper(b).handle_schedule({})
    assert b.state(d) == "ok" and b.gauges == {}  # no representative volume: nothing published


def test_paused_never_clears_by_itself_and_stays_on_the_list_after_its_counts_age_out() -> None:
    b = Breaker()
    d = domain_scope(SENDER)
    b.rep.count_sent([(SENDER, None, 100)])
    for _ in range(10):
        b.rep.count_bounce(SENDER, None)
    assert b.state(d) == "paused"
    since = b.store.states[d].since
    sweeper = _sweeper(b)
    for _ in range(20):  # 20 days of schedules, one a day
        b.clock.advance(86400)
        out = sweeper.handle_schedule({})
        assert b.state(d) == "paused" and b.store.states[d].since == since
        assert out["reputation_scopes"] == 1  # still found: filed again under each day
    b.rep.resume(d, "admin")
    b.clock.advance(86400)
    assert sweeper.handle_schedule({})["reputation_scopes"] == 1  # one more day on the list
    b.clock.advance(9 * 86400)
    assert sweeper.handle_schedule({})["reputation_scopes"] == 0  # ok, no counts: off the list


def test_a_failing_store_never_fails_the_sweep() -> None:
    b = Breaker()
    b.rep.count_sent([(SENDER, "k1", 100)])
    b.store.fail = True
    out = _sweeper(b).handle_schedule({})
    assert out["overdue"] == 0 and "reputation_scopes" not in out
    assert b.counts["ReputationStoreError"] == 1


def test_a_scopes_rate_is_its_own_emf_metric_with_its_dimension(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What CloudWatch receives from telemetry.gauge in Lambda: one EMF blob per scope and rate
    whose dimension set is exactly {Domain|ApiKey, service}, which the template's Metrics
    Insights alarms select with SCHEMA("Outpost", Domain, service) (tests/sam)."""
    from outpost.telemetry import _Metrics

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "outpost-sweeper")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    b = Breaker()
    b.rep.gauge = _Metrics().gauge
    b.rep.count_sent([(SENDER, "k1", 100)])
    for _ in range(7):
        b.rep.count_bounce(SENDER, "k1")
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    last: dict[tuple[str, str, str], float] = {}
    for blob in blobs:
        (spec,) = blob["_aws"]["CloudWatchMetrics"]
        (dims,) = spec["Dimensions"]
        (metric,) = spec["Metrics"]
        assert spec["Namespace"] == "Outpost" and set(dims) in ({"Domain", "service"}, {"ApiKey", "service"})
        kind = next(d for d in dims if d != "service")
        value = blob[metric["Name"]]
        last[(metric["Name"], kind, blob[kind])] = value[0] if isinstance(value, list) else value
    assert last[("BounceRate", "Domain", SENDER)] == 0.07 and last[("BounceRate", "ApiKey", "k1")] == 0.07
    assert last[("ComplaintRate", "Domain", SENDER)] == 0.0
