"""Fleet-wide shaping (issue 11 items 2, 3, 5; delivery/shaping.py) with in-memory fakes: the
store's Slots (tests/fakes/store.py, the same all-or-nothing rules as the conditional writes),
the SMTP transport, a clock moved by hand. Each rule of shaping.py's docstring, one test each:
messages per connection, a full connection cap (waits, no attempt), a killed sender's expired
lease, a rate window, the warm-up's daily cap and its interplay with the lifetime, the switch,
and a failing store (delivery goes on unshaped). The fleet-wide cap under real races is
tests/integration/test_shaping_slots.py's (DynamoDB Local, real SMTP)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from outpost.api.service import QueryService
from outpost.delivery import shaping
from outpost.delivery.shaping import WARMUP, warmup_cap, windows
from outpost.models import QueueJob, RecipientState
from tests.fakes.store import FakeMessages
from tests.unit.test_delivery_service import World

PROVIDER = "mx.example.test"  # the fake MX host is its own provider (providers.provider_for)


class ShapedWorld(World):
    """test_delivery_service's World with the fake store's Slots plugged in."""

    def __init__(self, env: Mapping[str, str] | None = None, store: FakeMessages | None = None) -> None:
        super().__init__(store, env=env)
        self.by: dict[tuple[str, str], int] = {}
        self.service.count_by = self.count_by
        self.service.shaper.slots = self.store

    def count_by(self, name: str, n: int, dims: Mapping[str, str]) -> None:
        key = (name, dims.get("provider", ""))
        self.by[key] = self.by.get(key, 0) + n

    def slot(self) -> tuple[dict[str, float], dict[str, int]]:
        return self.store._slot("default", PROVIDER)


def _limits(**row: int) -> dict[str, str]:
    return {"OUTPOST_SHAPING": json.dumps({PROVIDER: row})}


def _job(mid: str) -> QueueJob:
    return QueueJob(message_id=mid, attempt=1)


def test_a_session_is_closed_after_its_messages_per_connection_and_the_next_takes_a_new_slot() -> None:
    w = ShapedWorld(_limits(per_connection=2, connections=1))
    mid = w.send(*(f"u{i}@example.test" for i in range(5)))
    assert w.run(_job(mid)) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 5
    # 2 + 2 + 1 messages: three sessions, one after the other (cap 1), each closed with QUIT.
    assert len(w.connector.opened) == 3 and all(s.quit_sent for s in w.connector.opened)
    assert [line.split()[0] for line in w.peer.log].count("QUIT") == 3
    leases, _ = w.slot()
    assert leases == {}  # every slot released
    assert w.by[("ConnectionsInUse", PROVIDER)] == 3  # one lease in use at each take


def test_with_every_slot_taken_the_recipients_wait_with_no_attempt_and_say_so() -> None:
    w = ShapedWorld(_limits(connections=2))
    leases, _ = w.slot()
    leases.update({"other-1": w.clock() + 100, "other-2": w.clock() + 100})  # two live leases elsewhere
    mid = w.send("alice@example.test", "bob@example.test")
    assert w.run(_job(mid)) == []
    assert w.connector.opened == []  # no session: no connection over the fleet's cap
    now = w.clock()
    for r in w.recipients(mid):
        assert r.state is RecipientState.DEFERRED and r.attempts == ()  # no attempt counted
        assert r.waiting is not None and r.waiting.reason == "shaping" and r.waiting.provider == PROVIDER
        lo, hi = shaping.SLOT_WAIT
        assert now + lo <= r.next_attempt_at <= now + hi + 60  # soon, never at once
        assert r.last is not None and r.last["status"] == "4.4.5"
    [(job, delay)] = w.jobs.sent
    assert delay >= shaping.SLOT_WAIT[0]  # never a tight re-queue loop
    # GET /v1/messages/{id}: the recipient says why it waits, and until when.
    out = QueryService(store=w.store, suppressions=w.suppressions, clock=w.clock).message(mid)
    waiting = out["recipients"][0]["waiting"]
    assert waiting["reason"] == "shaping" and waiting["provider"] == PROVIDER
    assert waiting["until"].startswith(datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d"))
    assert "connections" in waiting["detail"]
    assert w.by[("DeferredByShaping", PROVIDER)] == 2  # per recipient
    # A slot frees: the job that comes back delivers, and the waiting record is gone.
    leases.pop("other-1")
    w.clock.now = job.not_before or now
    assert w.run(job) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 2
    assert all(r.waiting is None and len(r.attempts) == 1 for r in w.recipients(mid))


def test_an_expired_lease_of_a_killed_sender_is_dropped_and_its_slot_reused() -> None:
    w = ShapedWorld(_limits(connections=1))
    leases, _ = w.slot()
    leases["killed"] = w.clock() - 1  # its container died; the lease ran out
    mid = w.send("alice@example.test")
    assert w.run(_job(mid)) == []
    assert w.recipients(mid)[0].state is RecipientState.DELIVERED
    assert leases == {}


def test_a_rate_window_lets_its_limit_through_and_the_rest_wait_for_the_next_minute() -> None:
    w = ShapedWorld(_limits(per_minute=3))
    w.clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 10  # 10 s into a minute
    mid = w.send(*(f"u{i}@example.test" for i in range(5)))
    assert w.run(_job(mid)) == []
    rs = w.recipients(mid)
    assert [r.state for r in rs] == [RecipientState.DELIVERED] * 3 + [RecipientState.DEFERRED] * 2
    minute_end = w.clock.now - w.clock.now % 60 + 60
    for r in rs[3:]:
        assert r.attempts == () and r.waiting is not None and r.waiting.reason == "shaping"
        assert r.waiting.until == minute_end and minute_end <= r.next_attempt_at <= minute_end + 6
        assert "3 messages a minute" in r.waiting.detail
    _, used = w.slot()
    assert used == {f"m{int(w.clock.now // 60)}": 3}  # the unsent part of the block was given back
    [(job, _)] = w.jobs.sent
    w.clock.now = job.not_before or 0
    assert w.run(job) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 5


def test_the_warm_up_caps_a_day_and_the_rest_wait_for_the_next_utc_day() -> None:
    w0 = ShapedWorld()
    today = datetime.fromtimestamp(w0.clock(), UTC).date()
    w = ShapedWorld({"OUTPOST_WARMUP_START": (today - timedelta(days=2)).isoformat()})  # day 3
    cap = WARMUP[2]
    assert warmup_cap(w.service.settings.warmup_start, w.clock()) == cap
    _, used = w.slot()
    used[f"d{today:%Y%m%d}"] = cap - 1  # the fleet sent all but one today
    mid = w.send("a@example.test", "b@example.test", "c@example.test")
    assert w.run(_job(mid)) == []
    rs = w.recipients(mid)
    assert [r.state for r in rs] == [RecipientState.DELIVERED] + [RecipientState.DEFERRED] * 2
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    for r in rs[1:]:
        assert r.attempts == () and r.waiting is not None
        assert r.waiting.reason == "warmup" and r.waiting.until == midnight
        assert "warm-up day 3" in r.waiting.detail
    assert w.by[("DeferredByWarmup", PROVIDER)] == 2
    assert used[f"d{today:%Y%m%d}"] == cap  # never over the day's cap


def test_a_warm_up_wait_never_outlives_the_message_it_expires_at_its_lifetime_naming_the_warm_up() -> None:
    w0 = ShapedWorld()
    today = datetime.fromtimestamp(w0.clock(), UTC).date()
    w = ShapedWorld({"OUTPOST_WARMUP_START": today.isoformat()})
    _, used = w.slot()
    used[f"d{today:%Y%m%d}"] = WARMUP[0]  # today's cap is used up
    mid = w.send("a@example.test")
    until = w.store.messages[mid].meta.deliver_until
    w.clock.now = until - 3600  # an hour of lifetime left, the next UTC day further away
    used[f"d{datetime.fromtimestamp(w.clock(), UTC):%Y%m%d}"] = 10**9
    assert w.run(_job(mid)) == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DEFERRED and r.next_attempt_at is not None
    assert r.next_attempt_at <= until - 1  # capped by the lifetime, not the warm-up
    w.clock.now = r.next_attempt_at + 2
    [(job, _)] = w.jobs.sent
    assert w.run(job) == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.EXPIRED and r.last is not None
    assert r.last["status"] == "4.4.7" and "warm-up" in r.last["text"]


def test_windows_are_only_the_limits_that_are_set() -> None:
    from outpost.delivery.providers import Limits

    now = 1_800_000_000.0
    assert windows("p", Limits(5, 50), None, now) == []  # no rate, no warm-up: tokens are free
    names = [x.name for x in windows("p", Limits(5, 50, 60, 1000), "2027-06-01", now)]
    assert names == [f"m{int(now // 60)}", f"h{int(now // 3600)}"]  # the warm-up starts later
    assert warmup_cap("2027-06-01", now) is None and warmup_cap(None, now) is None
    start = datetime.fromtimestamp(now, UTC).date()
    assert [warmup_cap(start.isoformat(), now + d * 86400) for d in (0, 1, 29, 30)] == [50, 100, WARMUP[29], None]


def test_shaping_switched_off_makes_no_store_call_and_has_no_per_connection_cap() -> None:
    w = ShapedWorld({**_limits(per_connection=1, connections=1), "OUTPOST_SHAPING_ENABLED": "false"})
    leases, _ = w.slot()
    leases.update({"other": w.clock() + 100})  # the cap is full, and it does not matter
    calls = w.store.slot_calls
    mid = w.send("a@example.test", "b@example.test")
    assert w.run(_job(mid)) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 2
    assert w.store.slot_calls == calls and len(w.connector.opened) == 1


def test_a_failing_store_never_blocks_delivery() -> None:
    w = ShapedWorld(_limits(per_minute=1))
    w.store.fail_slots = True
    mid = w.send("a@example.test", "b@example.test")
    assert w.run(_job(mid)) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 2
    assert w.by[("ShapingStoreFailed", PROVIDER)] >= 1


def _batch(w: World, mids: list[str]) -> None:
    event = {"Records": [{"messageId": f"sqs-{i}", "body": _job(mid).model_dump_json()} for i, mid in enumerate(mids)]}
    out = w.service.handle_sqs_event(event, lambda: 600_000)
    assert out["batchItemFailures"] == []


def test_a_batch_shares_at_most_two_sessions_per_domain_instead_of_a_slot_per_job() -> None:
    w = ShapedWorld()
    mids = [w.send(f"u{i}@example.test") for i in range(10)]
    _batch(w, mids)
    assert all(w.recipients(mid)[0].state is RecipientState.DELIVERED for mid in mids)
    assert len(w.connector.opened) == shaping.SESSIONS_PER_DOMAIN  # 10 jobs, 2 sessions
    assert w.store.slot_calls == 2 * shaping.SESSIONS_PER_DOMAIN  # a take and a release each
    # The control: without shaping, the same batch opens a session per concurrent job.
    c = ShapedWorld({"OUTPOST_SHAPING_ENABLED": "false"})
    _batch(c, [c.send(f"u{i}@example.test") for i in range(10)])
    assert len(c.connector.opened) > shaping.SESSIONS_PER_DOMAIN


def test_the_connection_cap_takes_a_lower_cap_from_outside_the_ramp_after_a_suspension() -> None:
    w = ShapedWorld(_limits(connections=5))
    asked: list[tuple[str, str, int]] = []

    def ramp(ip: str, provider: str, limits: object, now: float) -> int:
        asked.append((ip, provider, getattr(limits, "connections", 0)))
        return 1  # e.g. suspension.connection_cap: one connection right after a suspension

    w.service.shaper.cap_for = ramp
    leases, _ = w.slot()
    leases["other"] = w.clock() + 100  # one session elsewhere already
    mid = w.send("a@example.test")
    assert w.run(_job(mid)) == []
    [r] = w.recipients(mid)
    assert r.waiting is not None and r.waiting.reason == "shaping" and "all 1 connections" in r.waiting.detail
    assert asked == [("default", PROVIDER, 5)]


def test_a_lease_is_renewed_while_its_session_lives_and_a_lost_one_ends_the_session() -> None:
    import asyncio

    w = ShapedWorld()
    shaper = w.service.shaper
    slot = asyncio.run(shaper.open(PROVIDER))
    assert isinstance(slot, shaping.Slot) and slot.lease_id is not None
    leases, _ = w.slot()
    first = leases[slot.lease_id]
    w.clock.advance(shaping.LEASE - shaping.RENEW_AT + 1)  # less than RENEW_AT left
    assert asyncio.run(shaper.before_send(slot)) is None
    assert leases[slot.lease_id] == w.clock() + shaping.LEASE > first  # renewed
    del leases[slot.lease_id]  # dropped by another sender as expired (a long stall here)
    w.clock.advance(shaping.LEASE)
    assert asyncio.run(shaper.before_send(slot)) is None and shaper.spent(slot)  # this message, then close


def test_the_settings_name_a_bad_warm_up_date_and_read_the_switch() -> None:
    import pytest

    from outpost.config import Settings
    from outpost.errors import ConfigError

    with pytest.raises(ConfigError, match="OUTPOST_WARMUP_START"):
        Settings.from_env({"OUTPOST_WARMUP_START": "30/11/2026"})
    s = Settings.from_env({"OUTPOST_WARMUP_START": " 2026-11-30 ", "OUTPOST_SHAPING_ENABLED": "False"})
    assert s.warmup_start == "2026-11-30" and s.shaping_enabled is False
    d = Settings.from_env({"OUTPOST_WARMUP_START": ""})
    assert d.warmup_start is None and d.shaping_enabled is True


def test_sessions_the_server_closed_while_idle_free_their_slots_and_never_make_a_job_wait(monkeypatch) -> None:
    """Review (issue 11): two shaped sessions sit idle in the batch's pool and the server
    closes both (an idle timeout). The next job's `take` drops them; they must free their
    fleet slots and this container's count at once, not at the end of the batch: else
    `turn` waits TURN_WAIT for sessions that will never come back, and the fleet's cap
    counts two dead connections for the rest of the batch."""
    import asyncio
    import time

    from outpost.delivery import domain
    from outpost.delivery.transport import SessionPool

    monkeypatch.setattr(domain, "TURN_WAIT", 10.0)  # (the real 30 s, shortened for the test)
    w = ShapedWorld()
    svc = w.service
    mids = [w.send(f"u{i}@example.test") for i in range(3)]
    elapsed: list[float] = []

    async def main() -> None:
        pool = SessionPool()
        deadline = w.clock() + 600
        w.peer.delays["DATA"] = 0.2  # both jobs in flight at once: two sessions
        await asyncio.gather(svc.deliver(_job(mids[0]), pool, deadline),
                             svc.deliver(_job(mids[1]), pool, deadline))
        assert len(w.connector.opened) == 2  # (within shaping.SESSIONS_PER_DOMAIN)
        for s in w.connector.opened:
            s._open = False  # the server closed them while they were idle in the pool
        w.peer.delays.clear()
        started = time.monotonic()
        await svc.deliver(_job(mids[2]), pool, deadline)
        elapsed.append(time.monotonic() - started)
        leases, _ = w.slot()
        assert len(leases) == 1  # only the new session's; the dead ones freed theirs
        await pool.close()
        svc.shaper.batch_done()

    asyncio.run(main())
    assert all(w.recipients(mid)[0].state is RecipientState.DELIVERED for mid in mids)
    assert elapsed[0] < 3.0  # no wait (10 s) for a turn that cannot come
    assert w.slot()[0] == {}


def test_jobs_waiting_for_a_turn_hand_off_once_the_domain_is_found_slow() -> None:
    """Review (issue 11): on the new-mail lane, a batch's jobs beyond the domain's two sessions
    wait in `turn`. When the two in flight find the domain slow (SLOW_TRANSACTION, abandoned
    before the dot), the waiters must go to the slow lane, as every job would have without
    shaping, not open a session each and pay SLOW_TRANSACTION again one after the other."""
    w = ShapedWorld()
    w.peer.delays["DATA"] = 0.5
    w.service.SLOW_TRANSACTION = 0.1
    mids = [w.send(f"u{i}@example.test") for i in range(6)]
    _batch(w, mids)
    abandoned = [line for line in w.peer.log if line.endswith("abandoned")]
    assert len(abandoned) == shaping.SESSIONS_PER_DOMAIN, w.peer.log  # only the two in flight paid it
    assert w.peer.accepted == []
    slow_jobs = [job for job, _ in w.jobs.sent if job.slow]
    assert sorted(j.message_id for j in slow_jobs) == sorted(mids)  # every job handed to the slow lane
    assert all(w.recipients(mid)[0].attempts == () for mid in mids)  # no attempt counted
    assert w.slot()[0] == {}  # every slot released


def test_a_store_that_hangs_in_a_slot_write_never_blocks_delivery() -> None:
    """Review (issue 11): a store that does not answer (DynamoDB throttled or unreachable: the
    sender's boto3 client tries 4 times with a 10 s read timeout) must not hold delivery for
    it: each slot call is bounded by shaping.STORE_WAIT, then the session goes unshaped, as
    for a store that fails outright (and as the slow-domain and suspension reads do)."""
    import threading
    import time

    class HangingSlots(FakeMessages):
        gate = threading.Event()

        def take_slot(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.gate.wait(30.0)  # a request that hangs (released once both are recorded)
            return super().take_slot(*args, **kwargs)

        def finish_attempt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.recorded.append(time.monotonic())
            if len(self.recorded) == 2:
                # Both recorded: the hang may end (asyncio.run waits for its thread at shutdown).
                # Counted, not timed: the hang outlasts the bound below by far, whatever the load.
                self.gate.set()
            return super().finish_attempt(*args, **kwargs)

    store = HangingSlots()
    store.recorded = []  # type: ignore[attr-defined]
    w = ShapedWorld(_limits(per_minute=100), store=store)
    mid = w.send("a@example.test", "b@example.test")
    started = time.monotonic()
    try:
        assert w.run(_job(mid)) == []
    finally:
        store.gate.set()
    # Delivered and recorded within the bound (asyncio.run itself still waits for the hung
    # thread at its shutdown, after the work is done).
    assert len(store.recorded) == 2 and max(store.recorded) - started < 3 * shaping.STORE_WAIT + 5  # type: ignore[attr-defined]
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 2
    assert w.by[("ShapingStoreFailed", PROVIDER)] >= 1


def test_a_throttle_on_a_shaped_session_frees_its_slot_and_the_next_job_waits_for_the_suspension() -> None:
    """Review (issue 11): a throttle reply in mid-transaction on a shaped session closes the
    session and frees its fleet slot (no lease left to expire), the recipient is charged its
    attempt, the job's other recipients wait for the suspension with none, and the next job
    for the provider does not connect: it waits too (the cap is 0 while suspended)."""
    w = ShapedWorld()
    w.peer.replies["RCPT"] = [(451, "4.7.1 Rate limit exceeded, try again later")]
    mid = w.send("a@example.test", "b@example.test")
    assert w.run(_job(mid)) == []
    assert w.slot()[0] == {}  # the throttled session's lease is gone at once
    a, b = w.recipients(mid)
    assert a.state is RecipientState.DEFERRED and len(a.attempts) == 1
    assert a.waiting is not None and a.waiting.reason == "suspended"
    assert b.state is RecipientState.DEFERRED and b.attempts == ()
    assert b.waiting is not None and b.waiting.reason == "suspended" and b.waiting.until == a.waiting.until
    opened = len(w.connector.opened)
    later = w.send("c@example.test")
    assert w.run(_job(later)) == []
    [c] = w.recipients(later)
    assert len(w.connector.opened) == opened and c.attempts == ()  # no connection while suspended
    assert c.waiting is not None and c.waiting.reason == "suspended"
    assert w.slot()[0] == {}
