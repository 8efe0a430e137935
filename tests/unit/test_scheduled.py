"""Scheduled sending and cancel (issue 14 item 3) with in-memory fakes and a clock moved by hand:
send_at's rules (api/scheduled.py), the sender's start of scheduled recipients at their time and
never before (delivery/scheduling.py), cancel's rules, the sweeper, events and the summary.

The same rules run against DynamoDB Local, the real sender and a real MX in
tests/integration/test_scheduled_sending.py, and over HTTP in test_api_scheduled.py.
"""

from __future__ import annotations

import email
from email.utils import parsedate_to_datetime

import pytest
from pydantic import ValidationError

from outpost.api.auth import Principal
from outpost.api.service import QueryService, SendService, _summary
from outpost.clock import iso
from outpost.errors import ForbiddenError, InvalidRequestError, NotFoundError
from outpost.events import EVENT_TYPES
from outpost.events.source import event_for
from outpost.models import (
    FINAL_STATES,
    MAX_SCHEDULE,
    OPEN_STATES,
    QueueJob,
    RecipientState,
    SendRequest,
    error_field,
)
from outpost.records import Suppression
from outpost.sweeper import Sweeper
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.unit.test_delivery_service import World

SENDER = "shop.test"
KEY = Principal(key_id="k1", name="unit", scopes=frozenset({"send", "read"}), domains=None)
HOUR = 3600.0


def _body(send_at: object, **extra: object) -> dict:
    return {"from": f"Shop <news@{SENDER}>", "to": ["alice@example.test"], "subject": "Hello",
            "text": "Hi.", "send_at": send_at, **extra}


def _api(clock: FakeClock, store: FakeMessages | None = None, **kw: object) -> tuple[SendService, FakeJobs]:
    jobs = FakeJobs()
    return SendService(store=store or FakeMessages(), suppressions=FakeSuppressions(), queue=jobs,
                       domains=FakeDomains(SENDER), clock=clock, **kw), jobs  # type: ignore[arg-type]


def _schedule(w: World, ahead: float, *to: str, **extra: object) -> str:
    body = _body(iso(w.clock() + ahead), **extra) | {"to": list(to) or ["alice@example.test"]}
    req = SendRequest.model_validate(body)
    return str(w.api.send_one(req)["id"])


# ---- send_at: the request's rules ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2026-12-01T09:00:00", "2026-12-01T09:00:00.5", "2026-12-01",
                                   "tomorrow", 1_800_000_000, "2026-12-01T09:00Z", "2026-13-01T09:00:00Z",
                                   "2026-12-01T09:00:00+2", "2026-12-01T09:00:00Z\n"])
def test_send_at_must_be_rfc3339_with_an_offset_else_422_naming_send_at(value: object) -> None:
    with pytest.raises(ValidationError) as err:
        SendRequest.model_validate(_body(value))
    assert error_field(err.value)[0] == "send_at"


@pytest.mark.parametrize("value", ["2026-12-01T09:00:00Z", "2026-12-01t09:00:00z", "2026-12-01T10:00:00+01:00",
                                   "2026-12-01 09:00:00.250Z", "2026-12-01T04:00:00-05:00"])
def test_send_at_accepts_rfc3339_with_z_or_an_offset(value: str) -> None:
    req = SendRequest.model_validate(_body(value))
    assert req.send_at is not None and int(req.send_at.timestamp()) == 1_796_115_600


def test_more_than_30_days_ahead_is_422_naming_send_at_and_30_days_is_accepted() -> None:
    clock = FakeClock()
    api, _ = _api(clock)
    too_far = SendRequest.model_validate(_body(iso(clock() + MAX_SCHEDULE + 1)))
    with pytest.raises(InvalidRequestError) as err:
        api.send_one(too_far)
    assert err.value.field == "send_at" and "30 days" in err.value.message
    ok = api.send_one(SendRequest.model_validate(_body(iso(clock() + MAX_SCHEDULE))))
    assert ok["recipients"] == [{"address": "alice@example.test", "status": "scheduled"}]


@pytest.mark.parametrize("ago", [0.0, 1.0, 86400.0 * 400])
def test_a_send_at_not_in_the_future_sends_at_once(ago: float) -> None:
    clock = FakeClock()
    store = FakeMessages()
    api, jobs = _api(clock, store)
    out = api.send_one(SendRequest.model_validate(_body(iso(clock() - ago))))
    assert out["recipients"] == [{"address": "alice@example.test", "status": "queued"}]
    meta = store.messages[out["id"]].meta
    assert meta.send_at is None and meta.deliver_until == clock() + 172800
    [(job, delay)] = jobs.sent
    assert job.not_before is None and delay == 0


def test_a_scheduled_message_waits_for_send_at_and_its_lifetime_counts_from_it() -> None:
    clock = FakeClock()
    store = FakeMessages()
    store_supp = FakeSuppressions()
    store_supp.add(Suppression.new("gone@example.test", clock(), source="manual", reason="r", kind="manual"))
    jobs = FakeJobs()
    api = SendService(store=store, suppressions=store_supp, queue=jobs, domains=FakeDomains(SENDER), clock=clock)
    at = clock() + 5 * HOUR
    out = api.send_one(SendRequest.model_validate(_body(iso(at), expires_in=3600) | {
        "to": ["alice@example.test", "gone@example.test"]}))
    assert [r["status"] for r in out["recipients"]] == ["scheduled", "suppressed"]
    m = store.messages[out["id"]]
    assert m.meta.send_at == at and m.meta.deliver_until == at + 3600
    alice, gone = m.recipients[0], m.recipients[1]
    assert alice.record.state is RecipientState.SCHEDULED and alice.record.next_attempt_at == at
    assert alice.due_at == at  # the sweeper's index: due at send_at, not at acceptance
    assert gone.record.state is RecipientState.SUPPRESSED and gone.due_at is None
    [(job, delay)] = jobs.sent
    assert job.not_before == at and delay == 5 * HOUR  # the queue caps it at 15 min; the job hops


def test_a_schedule_the_bucket_would_not_keep_the_body_for_is_refused_naming_send_at() -> None:
    clock = FakeClock()
    api, _ = _api(clock, retention_days=30)
    # 28 days + 2 days' lifetime + the store's 1-day margin > 30 days of retention
    with pytest.raises(InvalidRequestError) as err:
        api.send_one(SendRequest.model_validate(_body(iso(clock() + 28 * 86400))))
    assert err.value.field == "send_at" and "RetentionDays" in err.value.message
    assert api.send_one(SendRequest.model_validate(_body(iso(clock() + 27 * 86400))))["recipients"][0][
        "status"] == "scheduled"


def test_a_batch_item_with_send_at_gets_a_job_that_waits_for_it() -> None:
    clock = FakeClock()
    store = FakeMessages()
    api, jobs = _api(clock, store)
    at = clock() + HOUR
    out = api._run_batch([_body(iso(at)), _body(None), _body("2026-12-01T09:00:00")]).answer
    assert [r["status"] for r in out["results"]] == [202, 202, 422]
    assert out["results"][2]["error"]["field"] == "messages[2].send_at"
    assert out["results"][0]["recipients"][0]["status"] == "scheduled" and "_at" not in out["results"][0]
    by_id = {j.message_id: j for j, _ in jobs.sent}
    assert by_id[out["results"][0]["id"]].not_before == at
    assert by_id[out["results"][1]["id"]].not_before is None


# ---- the sender: at its time, never before --------------------------------------------------------

def test_no_job_sends_a_scheduled_recipient_before_its_time_and_one_does_at_it() -> None:
    w = World()
    mid = _schedule(w, HOUR)
    at = w.clock() + HOUR
    [(api_job, _)] = w.api.queue.sent  # type: ignore[attr-defined]
    # The API's job, early: it hops (queued again for send_at), nothing else.
    assert w.run(api_job) == []
    [(hop, delay)] = w.jobs.sent
    assert hop.not_before == at and delay == HOUR and w.connector.opened == []
    # A duplicate or rescue job without not_before, before the time: nothing moves.
    w.clock.advance(HOUR - 10)
    assert w.run(QueueJob(message_id=mid)) == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.SCHEDULED and r.lease_until is None and w.connector.opened == []
    assert not w.store.start_scheduled(mid, 0, w.clock())  # the store's own condition, too
    # At its time: delivered, once.
    w.clock.now = at
    w.run(hop)
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DELIVERED and w.rcpts_sent() == ["alice@example.test"]
    assert w.counts.get("ScheduledStarted") == 1
    for job in (hop, QueueJob(message_id=mid), api_job):  # redeliveries and duplicates
        w.run(job)
    assert w.rcpts_sent() == ["alice@example.test"]


def test_a_job_in_the_last_second_waits_for_send_at_and_the_date_is_send_at() -> None:
    w = World()
    mid = _schedule(w, HOUR)
    at = w.clock() + HOUR
    w.clock.now = at - 0.6  # SQS delays are whole seconds: a job may come a little early
    w.run(QueueJob(message_id=mid))
    assert w.slept and abs(w.slept[0] - 0.6) < 1e-6  # waited (on the fake clock) until send_at
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DELIVERED
    msg = email.message_from_bytes(w.peer.accepted[0].data)
    assert parsedate_to_datetime(msg["Date"]).timestamp() == int(at)


def test_the_lifetime_counts_from_send_at_under_the_operator_s_max_lifetime() -> None:
    w = World(env={"OUTPOST_MAX_LIFETIME": "3600"})
    mid = _schedule(w, 5 * HOUR)
    w.clock.advance(5 * HOUR + 60)  # 5 h after creation, a minute after send_at
    w.run(QueueJob(message_id=mid))
    assert w.recipients(mid)[0].state is RecipientState.DELIVERED


def test_an_address_suppressed_during_the_wait_is_not_sent_to() -> None:
    w = World()
    mid = _schedule(w, HOUR)
    w.suppressions.add(Suppression.new("alice@example.test", w.clock(), source="manual", reason="left",
                                       kind="manual"))
    w.clock.advance(HOUR)
    w.run(QueueJob(message_id=mid))
    [r] = w.recipients(mid)
    assert r.state is RecipientState.SUPPRESSED and w.connector.opened == []


def test_the_sweeper_leaves_a_scheduled_recipient_alone_until_its_time_then_rescues_it() -> None:
    w = World()
    mid = _schedule(w, HOUR)
    sweeper = Sweeper(store=w.store, queue=w.jobs, clock=w.clock, grace=900)
    w.clock.advance(HOUR + 899)
    assert sweeper.sweep().overdue == 0 and w.jobs.sent == []
    w.clock.advance(2)  # its job was lost: 15 minutes past send_at, the sweeper queues one
    assert sweeper.sweep().messages == 1
    [(job, _)] = w.jobs.sent
    assert job.message_id == mid and w.store.messages[mid].recipients[0].due_at == w.clock()
    w.run(job)
    assert w.recipients(mid)[0].state is RecipientState.DELIVERED


# ---- cancel -----------------------------------------------------------------------------------------

def test_cancel_takes_scheduled_queued_and_deferred_and_leaves_a_leased_one_to_finish() -> None:
    w = World()
    sched = _schedule(w, HOUR, "a@example.test", "b@example.test")
    now = w.clock()
    assert w.store.claim(sched, 1, now, 300) is False  # scheduled: nobody may claim it
    mid = w.api.send_one(SendRequest.model_validate(_body(None) | {
        "to": ["q@example.test", "d@example.test", "l@example.test", "x@example.test"]}))["id"]
    w.store.finish_attempt(mid, 1, RecipientState.DEFERRED, now, None, next_attempt_at=now + 60)
    assert w.store.claim(mid, 2, now, 300)  # a sender is in its transaction
    w.store.finish_attempt(mid, 3, RecipientState.DELIVERED, now, None)
    out = w.api.cancel(mid, KEY)
    assert out == {"id": mid, "canceled": 2, "recipients": [
        {"address": "q@example.test", "status": "canceled", "in_transaction": False},
        {"address": "d@example.test", "status": "canceled", "in_transaction": False},
        {"address": "l@example.test", "status": "queued", "in_transaction": True},
        {"address": "x@example.test", "status": "delivered", "in_transaction": False}]}
    assert w.api.cancel(mid, KEY) == out  # idempotent: the same answer
    assert [r["status"] for r in w.api.cancel(sched, KEY)["recipients"]] == ["canceled", "canceled"]
    assert all(w.store.messages[sched].recipients[i].due_at is None for i in (0, 1))  # out of the index
    # a canceled recipient is final: no claim, no start, no attempt can move it
    assert not w.store.claim(mid, 0, now, 300) and not w.store.start_scheduled(sched, 0, now + 2 * HOUR)
    assert not w.store.finish_attempt(mid, 0, RecipientState.DELIVERED, now, None)


def test_cancel_refuses_unknown_ids_and_messages_from_domains_the_key_may_not_send_from() -> None:
    w = World()
    mid = _schedule(w, HOUR)
    with pytest.raises(NotFoundError):
        w.api.cancel("0" * 26, KEY)
    with pytest.raises(NotFoundError):
        w.api.cancel("not-an-id", KEY)
    other = Principal(key_id="k2", name="other", scopes=frozenset({"send"}), domains=frozenset({"else.test"}))
    with pytest.raises(ForbiddenError) as err:
        w.api.cancel(mid, other)
    assert err.value.field == "id" and w.recipients(mid)[0].state is RecipientState.SCHEDULED
    tester = Principal(key_id="k4", name="test", scopes=frozenset({"send"}), mode="test")
    with pytest.raises(ForbiddenError) as err:
        w.api.cancel(mid, tester)  # a live message: a test key's actions are simulated, not real
    assert err.value.field == "id" and w.recipients(mid)[0].state is RecipientState.SCHEDULED
    mine = Principal(key_id="k3", name="mine", scopes=frozenset({"send"}), domains=frozenset({SENDER}))
    assert w.api.cancel(mid, mine)["canceled"] == 1


def test_a_deferred_recipient_canceled_between_attempts_is_never_attempted_again() -> None:
    from tests.fakes.transport import Peer

    w = World(peer=Peer(replies={"RCPT": (451, "4.3.0 Try later")}))
    mid = w.send("alice@example.test")
    w.run(QueueJob(message_id=mid))
    assert w.recipients(mid)[0].state is RecipientState.DEFERRED
    [(job, _)] = w.jobs.sent
    rcpts_before = len([c for c in w.peer.log if c.startswith("RCPT")])
    assert w.api.cancel(mid, KEY)["canceled"] == 1
    w.clock.now = float(job.not_before or 0) + 1
    w.run(job)  # all canceled: the job ends quietly, no session, no new job
    assert len([c for c in w.peer.log if c.startswith("RCPT")]) == rcpts_before
    assert len(w.jobs.sent) == 1 and w.recipients(mid)[0].state is RecipientState.CANCELED


# ---- states, events, the summary, the list ---------------------------------------------------------

def test_scheduled_is_open_and_canceled_is_final() -> None:
    assert RecipientState.SCHEDULED in OPEN_STATES and RecipientState.CANCELED in FINAL_STATES
    assert "message.scheduled" in EVENT_TYPES and "message.canceled" in EVENT_TYPES


def test_events_scheduled_then_queued_at_its_time_and_canceled() -> None:
    w = World()
    mid = _schedule(w, HOUR, "a@example.test", "b@example.test")
    created = w.recipients(mid)
    e = event_for(None, created[0])
    assert e is not None and e.type == "message.scheduled"
    w.clock.advance(HOUR)
    assert w.store.start_scheduled(mid, 0, w.clock())
    started = w.recipients(mid)[0]
    e = event_for(created[0], started)
    assert e is not None and e.type == "message.queued"
    w.api.cancel(mid, KEY)
    e = event_for(created[1], w.recipients(mid)[1])
    assert e is not None and e.type == "message.canceled" and e.data["state"] == "canceled"


def test_the_summary_says_scheduled_while_waiting_and_canceled_when_all_are() -> None:
    assert _summary({"scheduled"}) == "scheduled"
    assert _summary({"scheduled", "suppressed"}) == "scheduled"
    assert _summary({"scheduled", "queued"}) == "sending"
    assert _summary({"canceled"}) == "canceled"
    assert _summary({"canceled", "delivered"}) == "partial"


def test_get_and_list_show_scheduled_and_canceled() -> None:
    w = World()
    sched = _schedule(w, HOUR, "a@example.test")
    gone = _schedule(w, HOUR, "b@example.test")
    w.api.cancel(gone, KEY)
    q = QueryService(store=w.store, suppressions=w.suppressions, clock=w.clock)
    view = q.message(sched)
    assert view["status"] == "scheduled" and view["send_at"] == iso(w.clock() + HOUR)
    assert view["recipients"][0]["next_attempt_at"] == iso(w.clock() + HOUR)
    listed = q.messages(recipient=None, status="scheduled", since=None, limit=10, cursor=None)
    assert [i["id"] for i in listed["items"]] == [sched]
    listed = q.messages(recipient=None, status="canceled", since=None, limit=10, cursor=None)
    assert [(i["id"], i["status"]) for i in listed["items"]] == [(gone, "canceled")]


class _Counts:
    """What the reputation breaker is told (Reputation's counting methods)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, str | None, int]] = []

    def check_send(self, domain: str, key_id: str | None, memo: dict | None) -> None:
        pass

    def count_sent(self, sends: object) -> None:
        self.sent.extend(s for s in sends if s[2])  # type: ignore[attr-defined]

    def count_bounce(self, domain: str | None, key_id: str | None) -> None:
        pass


def test_scheduled_recipients_count_as_sent_when_they_go_out_not_when_accepted() -> None:
    w = World()
    counts = _Counts()
    w.api.reputation = counts  # type: ignore[assignment]
    w.service.reputation = counts  # type: ignore[assignment]
    mid = w.api.send_one(SendRequest.model_validate(_body(iso(w.clock() + HOUR)) | {
        "to": ["a@example.test", "b@example.test"]}), principal=KEY)["id"]
    gone = w.api.send_one(SendRequest.model_validate(_body(iso(w.clock() + HOUR))), principal=KEY)["id"]
    w.api.cancel(gone, KEY)
    assert counts.sent == []  # accepted, not sent
    w.clock.advance(HOUR)
    w.run(QueueJob(message_id=mid))
    w.run(QueueJob(message_id=gone))
    assert counts.sent == [(SENDER, "k1", 2)]  # the canceled one was never sent


# ---- review (r14): RFC 3339's edges, each accepted correctly or a 422 naming send_at, never a 500 ----

@pytest.mark.parametrize(("value", "expected"), [
    ("2026-12-01T23:00:00+14:00", 1_796_115_600.0),  # the largest offset in use (Kiribati)
    ("2026-12-01T09:00:00-00:00", 1_796_115_600.0),  # RFC 3339 §4.3: UTC, local offset unknown
    ("2026-12-01t09:00:00.123456789z", 1_796_115_600.123456),  # nanoseconds (to microseconds), t and z
    ("0001-01-01T00:00:00+23:59", -62_135_683_140.0),  # before year 1 in UTC: the past, sent at once
    ("9999-12-31T23:59:59-23:59", 422),  # after year 9999 in UTC: too far ahead
    ("2026-12-31T23:59:60Z", 422),  # a leap second: Python has none; refused, not misread
    ("2026-12-01T09:00:00+24:00", 422), ("2026-12-01T09:00:00-23:60", 422),
    ("0000-01-01T00:00:00Z", 422), ("2026-02-29T09:00:00Z", 422),
    ("2026-12-01T09:00:00.1234567890Z", 422),  # more than nanoseconds
])
def test_send_at_edges_are_accepted_correctly_or_a_422_naming_send_at(value: str, expected: float) -> None:
    """Each a 422 naming send_at or the right instant (in the past here: sent at once)."""
    clock = FakeClock()
    api, _ = _api(clock)
    try:
        req = SendRequest.model_validate(_body(value))
        out = api.send_one(req)
    except ValidationError as exc:
        assert expected == 422 and error_field(exc)[0] == "send_at"
        return
    except InvalidRequestError as exc:
        assert expected == 422 and exc.field == "send_at"
        return
    assert req.send_at is not None and req.send_at.timestamp() == pytest.approx(expected, abs=1e-6)
    assert out["recipients"][0]["status"] == "queued"  # FakeClock is in 2027


def test_a_template_send_with_send_at_is_scheduled_with_the_rendered_bodies() -> None:
    """The two issue-14 forms together: the request rebuilt from the rendered template keeps
    its (already read) send_at."""
    from outpost.templates.service import TemplateService
    from tests.fakes.templates import FakeTemplates

    clock = FakeClock(1_800_000_000.0)
    templates = TemplateService(FakeTemplates(), clock=clock)
    templates.create("reset", {"name": "Reset", "subject": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"})
    store = FakeMessages()
    api, jobs = _api(clock, store, templates=templates)
    body = {"from": f"Shop <news@{SENDER}>", "to": ["alice@example.test"], "template": "reset",
            "variables": {"name": "Alice"}, "send_at": iso(clock() + HOUR)}
    out = api.send_one(SendRequest.model_validate(body))
    assert out["recipients"][0]["status"] == "scheduled"
    stored = store.load(out["id"])
    assert stored is not None and stored.meta.send_at == clock() + HOUR
    assert stored.meta.template == "reset" and stored.meta.subject == "Hi Alice"


def test_the_default_retention_keeps_a_30_day_schedule_with_the_longest_lifetime() -> None:
    """The issue's 30 days ahead, with the deployment's defaults (RetentionDays 45)."""
    from outpost.config import SQS_MAX_RETENTION, Settings

    clock = FakeClock()
    api, _ = _api(clock, retention_days=Settings().retention_days)
    for lifetime in (None, SQS_MAX_RETENTION):
        extra = {} if lifetime is None else {"expires_in": lifetime}
        out = api.send_one(SendRequest.model_validate(_body(iso(clock() + MAX_SCHEDULE), **extra)))
        assert out["recipients"][0]["status"] == "scheduled", lifetime
