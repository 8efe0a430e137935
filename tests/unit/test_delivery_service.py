"""DeliveryService's job-level rules with in-memory fakes: the store (tests/fakes/store.py), the
SMTP transport (tests/fakes/transport.py), a clock moved by hand, a fixed MX answer, a signer
that needs no key. No socket and no local stack: each rule of delivery/service.py's docstring
in milliseconds, where a failure names the rule.

The same rules run against real servers in tests/integration/test_sender_*.py; these pin them
down one at a time. Messages are created by SendService over the same fakes, as the API does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from outpost.api.service import SendService
from outpost.config import Settings
from outpost.delivery.backoff import delay_for_release, next_attempt_at
from outpost.delivery.service import DeliveryService, MemoryBudget
from outpost.delivery.transport import SessionPool, Timeouts
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from outpost.records import Attempt, Recipient, StoredMessage, Suppression
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions, Unavailable
from tests.fakes.transport import FakeConnector, Peer

SENDER = "shop.test"
MX_IP = "192.0.2.1"
TIMEOUTS = Timeouts(connect=1.0, command=1.0, end_of_data=5.0, end_of_data_min=2.0)
JITTER = 0.25  # the service's rng: a fixed jitter, so next_attempt_at is known


class FakeSigner:
    def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=unit; b=fake\r\n"


class RacingMessages(FakeMessages):
    """A store where another invocation claims every recipient right after this run loads the
    message: the claim is the only thing between the two runs."""

    def load(self, message_id: str) -> StoredMessage | None:
        stored = super().load(message_id)
        if stored is not None:
            for r in stored.recipients:
                super().claim(message_id, r.index, 0.0 + self.now, 300.0)
        return stored

    now = 0.0


class RefusingMessages(FakeMessages):
    """A store that refuses to record a delivery while `refuse_delivered` is set."""

    refuse_delivered = False

    def finish_attempt(self, message_id: str, index: int, state: RecipientState, now: float,
                       attempt: Attempt | None, **kw: Any) -> bool:
        if self.refuse_delivered and state is RecipientState.DELIVERED:
            raise Unavailable("the message store is unavailable")
        return super().finish_attempt(message_id, index, state, now, attempt, **kw)


class World:
    def __init__(self, store: FakeMessages | None = None, *, peer: Peer | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else FakeMessages()
        self.suppressions, self.jobs = FakeSuppressions(), FakeJobs()
        self.peer = peer or Peer()
        self.connector = FakeConnector({MX_IP: self.peer}, timeouts=TIMEOUTS)
        self.counts: dict[str, int] = {}
        self.slept: list[float] = []
        self.api = SendService(store=self.store, suppressions=self.suppressions, queue=FakeJobs(),
                               domains=FakeDomains(SENDER), clock=self.clock)

        async def sleep(seconds: float) -> None:  # the write retries' pauses, on the fake clock
            self.slept.append(seconds)
            self.clock.advance(seconds)

        self.service = DeliveryService(
            settings=Settings.from_env(dict(env or {})), store=self.store, suppressions=self.suppressions,
            queue=self.jobs, resolve_mx=lambda domain: [MxHost(f"mx.{domain}", 10, (MX_IP,))],
            connector=self.connector, signer_for=lambda domain: FakeSigner(),
            return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}", clock=self.clock,
            rng=lambda: JITTER, count=self.count, sleep=sleep)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def send(self, *to: str) -> str:
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": list(to),
                                          "subject": "Hello", "text": "Hi."})
        return str(self.api.send_one(req)["id"])

    def run(self, job: QueueJob, *, seconds_left: float = 600.0) -> list[str]:
        """One SQS batch of one job, with `seconds_left` in the invocation (less 5 s kept)."""
        event = {"Records": [{"messageId": "sqs-1", "body": job.model_dump_json()}]}
        out = self.service.handle_sqs_event(event, lambda: int((seconds_left + 5) * 1000))
        return [f["itemIdentifier"] for f in out["batchItemFailures"]]

    def recipients(self, mid: str) -> list[Recipient]:
        stored = self.store.load(mid)
        assert stored is not None
        return stored.recipients

    def rcpts_sent(self) -> list[str]:
        return [d.rcpt for d in self.peer.accepted]


def _first_job(mid: str) -> QueueJob:
    return QueueJob(message_id=mid, attempt=1)


# ---- claim -------------------------------------------------------------------------------------

def test_a_recipient_claimed_by_another_run_is_not_sent_and_comes_back_after_its_lease() -> None:
    store = RacingMessages()
    w = World(store)
    store.now = w.clock()
    mid = w.send("alice@example.test")
    assert w.run(_first_job(mid)) == []
    assert w.peer.log == [] and w.connector.opened == []  # no session at all
    [r] = w.recipients(mid)
    assert r.state is RecipientState.QUEUED and r.attempts == () and r.lease_until == w.clock() + 300.0
    [(job, delay)] = w.jobs.sent
    # This run's own lease would have ended at deadline + LEASE_MARGIN: it comes back then.
    assert delay == 600.0 + 30.0 and job.not_before == w.clock() + 630.0


# ---- expire ------------------------------------------------------------------------------------

def test_a_message_past_its_lifetime_expires_with_4_4_7_and_no_transaction() -> None:
    w = World()
    mid = w.send("alice@example.test")
    until = w.store.messages[mid].meta.deliver_until
    w.clock.now = until + 1
    assert w.run(_first_job(mid)) == []
    assert w.connector.opened == [] and w.peer.log == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.EXPIRED and r.last is not None and r.last["status"] == "4.4.7"
    assert w.jobs.sent == [] and w.counts.get("Expired") == 1


def test_operator_max_lifetime_caps_the_message_s_own() -> None:
    w = World(env={"OUTPOST_MAX_LIFETIME": "3600"})
    mid = w.send("alice@example.test")
    w.clock.advance(3601)  # within the message's 2 days, past the operator's hour
    w.run(_first_job(mid))
    assert [r.state for r in w.recipients(mid)] == [RecipientState.EXPIRED] and w.peer.log == []


# ---- suppress ----------------------------------------------------------------------------------

def test_an_address_suppressed_after_queueing_is_suppressed_at_send_time_not_sent() -> None:
    w = World()
    mid = w.send("alice@example.test", "bob@example.test")
    w.suppressions.add(Suppression.new("BOB@example.test", w.clock(), source="complaint",
                                       reason="complaint", kind="hard"))
    w.run(_first_job(mid))
    alice, bob = w.recipients(mid)
    assert bob.state is RecipientState.SUPPRESSED and bob.last == {
        "status": "5.7.1", "text": "address is on the suppression list"}
    assert alice.state is RecipientState.DELIVERED
    assert w.rcpts_sent() == ["alice@example.test"]  # one transaction, alice's
    assert w.jobs.sent == []  # nobody open: no job


# ---- reschedule --------------------------------------------------------------------------------

def test_a_4xx_defers_on_the_backoff_schedule_and_queues_one_current_job_for_then() -> None:
    w = World(peer=Peer(replies={"RCPT": (451, "4.3.0 Try again later")}))
    mid = w.send("alice@example.test")
    now = w.clock()
    w.run(_first_job(mid))
    [r] = w.recipients(mid)
    until = w.store.messages[mid].meta.deliver_until
    expected = next_attempt_at(now, 1, until, Settings.from_env({}).retry_schedule, JITTER)
    assert expected is not None and expected > now
    assert r.state is RecipientState.DEFERRED and r.next_attempt_at == expected
    assert len(r.attempts) == 1 and r.attempts[0].code == 451 and r.lease_until is None
    [(job, delay)] = w.jobs.sent
    assert delay == expected - now and job.not_before == expected
    assert job.attempt == 2 and job.releases == 0 and job.delivered is None
    assert job.token is not None and w.store.messages[mid].meta.job_token == job.token


def test_a_deferred_recipient_is_not_retried_before_its_time() -> None:
    w = World(peer=Peer(replies={"RCPT": [(451, "4.3.0 Try again later")]}))
    mid = w.send("alice@example.test")
    w.run(_first_job(mid))
    [(job, _)] = w.jobs.sent
    w.jobs.sent.clear()
    # The job comes early (SQS may deliver a delayed message at any time after its delay).
    w.clock.advance(5)
    early = job.model_copy(update={"not_before": None})
    w.run(early)
    assert w.peer.log.count("RCPT 451") == 1 and w.peer.accepted == []
    [(again, delay)] = w.jobs.sent
    assert again.not_before == job.not_before and delay == job.not_before - w.clock()
    w.jobs.sent.clear()
    w.clock.now = float(job.not_before or 0)  # its time: delivered
    w.run(again)
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED]


# ---- release on deadline -------------------------------------------------------------------------

def test_no_time_left_releases_without_an_attempt_and_requeues_after_a_release_delay() -> None:
    w = World()
    mid = w.send("alice@example.test")
    needs = TIMEOUTS.transaction_budget + 10.0  # one transaction and its record, no more
    w.run(_first_job(mid), seconds_left=needs - 1)
    assert w.connector.opened == [] and w.peer.log == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.QUEUED and r.attempts == () and r.lease_until is None
    [(job, delay)] = w.jobs.sent
    assert delay == delay_for_release(1) > 0  # never 0: a release records nothing
    assert job.attempt == 1 and job.releases == 1  # no attempt counted
    # Released again in the next run, the delay grows (releases in a row).
    w.jobs.sent.clear()
    w.clock.advance(delay)
    w.run(job, seconds_left=needs - 1)
    [(job2, delay2)] = w.jobs.sent
    assert job2.releases == 2 and delay2 == delay_for_release(2) > delay


# ---- carried 2xx -------------------------------------------------------------------------------

def test_a_2xx_the_store_refused_is_kept_leased_carried_recorded_and_never_sent_again() -> None:
    store = RefusingMessages()
    w = World(store)
    mid = w.send("alice@example.test")
    store.refuse_delivered = True
    assert w.run(_first_job(mid)) == []
    assert w.rcpts_sent() == ["alice@example.test"]
    assert w.slept == [0.1, 0.3, 1.0, 2.0, 4.0]  # retried in process first (WRITE_RETRIES_2XX)
    [r] = w.recipients(mid)
    assert r.state is RecipientState.QUEUED and r.lease_until is not None  # never released
    [(job, delay)] = w.jobs.sent
    assert job.delivered is not None and [d["index"] for d in job.delivered] == [0]
    assert job.delivered[0]["attempt"]["code"] == 250
    assert 0 < delay < r.lease_until - w.clock()  # back while the lease still holds
    # Next run, the store works again: the carried reply is recorded first, nothing resent,
    # even though the recipient is still leased by the run that got the 2xx.
    store.refuse_delivered = False
    w.jobs.sent.clear()
    w.clock.advance(delay)
    w.run(job)
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DELIVERED and r.remote_id == "FAKE1"
    assert w.rcpts_sent() == ["alice@example.test"] and w.jobs.sent == []


def test_a_carried_2xx_is_recorded_even_by_a_stale_job() -> None:
    w = World()
    mid = w.send("alice@example.test")
    w.store.replace_job(mid, "current", None)
    carried = [{"index": 0, "attempt": {"at": "2027-01-15T08:00:00.000Z", "outcome": "delivered", "code": 250,
                                        "text": "2.0.0 Ok: queued as X9", "remote_id": "X9"}}]
    w.run(QueueJob(message_id=mid, attempt=2, token="stale", delivered=carried))
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DELIVERED and r.remote_id == "X9"
    assert w.peer.log == [] and w.jobs.sent == []


# ---- job token ---------------------------------------------------------------------------------

def test_a_job_whose_token_is_not_current_is_dropped() -> None:
    w = World()
    mid = w.send("alice@example.test")
    w.store.replace_job(mid, "current", None)
    w.run(QueueJob(message_id=mid, attempt=2, token="stale"))
    assert w.peer.log == [] and w.jobs.sent == [] and w.counts.get("StaleJob") == 1
    assert [r.state for r in w.recipients(mid)] == [RecipientState.QUEUED]
    w.run(QueueJob(message_id=mid, attempt=2, token="current"))
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED]


def test_a_tokenless_job_always_runs() -> None:
    w = World()
    mid = w.send("alice@example.test")
    w.store.replace_job(mid, "current", None)
    w.run(QueueJob(message_id=mid, attempt=1))
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED]


# ---- memory budget -----------------------------------------------------------------------------

def test_a_job_that_finds_no_room_in_the_memory_budget_is_released_with_no_attempt() -> None:
    w = World()
    mid = w.send("alice@example.test")
    budget = MemoryBudget(1000)

    async def run() -> None:
        assert await budget.take(900, 1)  # another job of the batch holds most of it
        pool = SessionPool()
        # Barely more than one session and transaction need: the wait for room gives up fast.
        deadline = w.clock() + TIMEOUTS.connect + TIMEOUTS.transaction_budget + 10.0 + 0.05
        await w.service.deliver(_first_job(mid), pool, deadline, budget)
        await pool.close()

    asyncio.run(run())
    assert w.peer.log == [] and w.counts.get("MemoryBudgetRelease") == 1
    [r] = w.recipients(mid)
    assert r.state is RecipientState.QUEUED and r.attempts == () and r.lease_until is None
    [(job, delay)] = w.jobs.sent
    assert delay == delay_for_release(1) and job.attempt == 1 and job.releases == 1
    assert budget.used == 900  # nothing taken, nothing given back


def test_the_first_job_always_fits_and_gives_its_room_back() -> None:
    w = World(env={"OUTPOST_SENDER_MEMORY_BUDGET": "1"})
    assert w.service.settings.sender_memory_budget is not None
    mid = w.send("alice@example.test")
    w.run(_first_job(mid))  # far larger than the budget, alone: it goes
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED]


# ---- bounce now on 5xx -------------------------------------------------------------------------

def test_a_5xx_bounces_at_once_suppresses_a_hard_failure_and_queues_nothing() -> None:
    w = World(peer=Peer(replies={"RCPT": (550, "5.1.1 <alice@example.test>: user unknown")}))
    mid = w.send("alice@example.test")
    w.run(_first_job(mid))
    [r] = w.recipients(mid)
    assert r.state is RecipientState.BOUNCED and r.bounce is not None
    assert r.bounce["kind"] == "hard" and r.bounce["status"] == "5.1.1"
    assert r.bounce["remote_mta"] == "mx.example.test"
    assert len(r.attempts) == 1 and r.attempts[0].code == 550 and r.attempts[0].command == "RCPT"
    s = w.suppressions.get("alice@example.test")
    assert s is not None and s.source == "bounce" and s.message_id == mid
    assert w.jobs.sent == [] and w.counts.get("Bounced") == 1


def test_a_policy_rejection_bounces_without_suppressing() -> None:
    w = World(peer=Peer(replies={"EOD": (554, "5.7.1 Message rejected as spam")}))
    mid = w.send("alice@example.test")
    w.run(_first_job(mid))
    [r] = w.recipients(mid)
    assert r.state is RecipientState.BOUNCED and r.bounce is not None and r.bounce["kind"] != "hard"
    assert w.suppressions.get("alice@example.test") is None


def test_an_unreadable_job_body_fails_the_record_for_the_dlq() -> None:
    w = World()
    event = {"Records": [{"messageId": "sqs-9", "body": json.dumps({"nope": 1})}]}
    out = w.service.handle_sqs_event(event, lambda: 60_000)
    assert out == {"batchItemFailures": [{"itemIdentifier": "sqs-9"}]}
