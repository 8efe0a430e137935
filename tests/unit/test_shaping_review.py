"""The review of issue 11's shaping (slice s11a), with in-memory fakes: store calls bounded in
threads (delivery/store_calls.py), slot waits that grow (shaping.py), the slot taken for the
provider of the MX the session really opened to, sessions pooled per MX set (transport.py
SessionPool). Real-server versions are tests/integration/test_shaping_review.py's."""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from outpost.delivery import shaping
from outpost.delivery.store_calls import STORE_THREADS, StoreCalls
from outpost.delivery.transport import TlsInfo
from outpost.errors import StoreStalledError
from outpost.models import QueueJob, RecipientState
from outpost.mx import MxHost
from outpost.tls_policy import StsPolicy, TlsPolicy
from tests.fakes.store import FakeMessages
from tests.fakes.transport import Peer
from tests.unit.test_delivery_service import MX_IP
from tests.unit.test_shaping import ShapedWorld, _job, _limits


class Stalled:
    """A store call that hangs until `gate` is set; counts how many run at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(10.0)
            return "late"
        finally:
            with self.lock:
                self.running -= 1


def _threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


# ---- item 4: a store call cut by STORE_WAIT keeps its thread -----------------------------------
def test_n_stalled_store_calls_never_hold_more_than_the_bound_of_threads_and_the_rest_fail_at_once() -> None:
    calls, stalled = StoreCalls(threads=3, name="t-stalled", queue=5), Stalled()

    async def one(wait: float = 0.3) -> str:
        try:
            return str(await calls.call(stalled, wait=wait))
        except TimeoutError:
            return "timeout"
        except StoreStalledError:
            return "stalled"

    async def many() -> tuple[list[str], list[str], float]:
        # The first wave: 3 run (and hang), 5 queue behind them, 12 find the queue full.
        first = list(await asyncio.gather(*(one() for _ in range(20))))
        await asyncio.sleep(0.1)  # (the running three are now well past their bound)
        # Then every thread is held by a call past its bound: the store is stalled, nothing
        # more is queued behind them, every call fails at once. Each would wait 5 s if it were
        # queued, so "at once" has a margin a loaded machine cannot eat (it was 0.25 s of 0.3).
        started = time.monotonic()
        second = list(await asyncio.gather(*(one(wait=5.0) for _ in range(20))))
        return first, second, time.monotonic() - started

    try:
        first, second, took = asyncio.run(many())
        assert first.count("timeout") == 8 and first.count("stalled") == 12, first  # 3 running + 5 queued
        assert second == ["stalled"] * 20 and took < 2.5  # at once: no wait behind a stalled store
        assert stalled.most == 3 and calls.busy == 3 and _threads("t-stalled") <= 3  # the queued never ran
    finally:
        stalled.gate.set()
    for _ in range(200):  # the hung calls return: their threads are free again
        if calls.busy == 0:
            break
        time.sleep(0.01)
    assert calls.busy == 0
    assert asyncio.run(calls.call(lambda: "ok", wait=1.0)) == "ok"


def test_a_burst_of_store_calls_on_a_healthy_store_queues_for_the_threads_and_none_fails() -> None:
    """A batch's sessions all closing at its end (a release each): more calls than threads, all done."""
    calls = StoreCalls(threads=2, name="t-burst")
    running, most, lock = [0], [0], threading.Lock()

    def release(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return n

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(calls.call(release, n, wait=5.0) for n in range(30))))

    assert asyncio.run(burst()) == list(range(30)) and most[0] <= 2


def test_a_batch_against_a_stalled_slot_store_holds_at_most_the_bound_of_threads_and_delivers_unshaped() -> None:
    stalled = Stalled()

    class StalledSlots(FakeMessages):
        def take_slot(self, *args: Any, **kwargs: Any) -> Any:
            stalled()
            return super().take_slot(*args, **kwargs)

    w = ShapedWorld(store=StalledSlots())
    # 12 domains (each its own MX, its own provider): 12 jobs that each want a slot at once.
    mids = [w.send(f"u{i}@d{i}.example.test") for i in range(12)]
    # One SQS batch of 12 jobs, each one message to the same provider.
    event = {"Records": [{"messageId": f"sqs-{i}", "body": QueueJob(message_id=m, attempt=1).model_dump_json()}
                         for i, m in enumerate(mids)]}
    before = _threads("outpost-shaping")  # (earlier tests' services keep theirs until collected)
    try:
        started = time.monotonic()
        out = w.service.handle_sqs_event(event, lambda: 605_000)
        took = time.monotonic() - started
        assert out["batchItemFailures"] == []
        assert stalled.most <= STORE_THREADS  # never more threads than the bound, however many jobs
        assert _threads("outpost-shaping") - before <= STORE_THREADS
        failed = sum(n for (name, _), n in w.by.items() if name == "ShapingStoreFailed")
        assert failed >= 12 - STORE_THREADS  # the rest failed fast
        # not 12 jobs x STORE_WAIT: a stalled store costs a job at most one bound
        assert took < 4 * shaping.STORE_WAIT + 5
    finally:
        stalled.gate.set()
    assert all(w.recipients(m)[0].state is RecipientState.DELIVERED for m in mids)


# ---- item 2: the slot is for the provider of the MX the session really opens to ------------------
PRIMARY, BACKUP = "mx1.alpha-provider.test", "mx2.beta-provider.test"  # each its own provider


def _split_world(**limits: Any) -> ShapedWorld:
    """split.test's MX set spans two providers: the primary refuses connections (no peer at its
    address), the backup (the World's peer) takes the mail."""
    w = ShapedWorld(env={"OUTPOST_SHAPING": json.dumps({BACKUP: limits})})
    w.service.resolve_mx = lambda domain: [MxHost(PRIMARY, 10, ("192.0.2.99",)), MxHost(BACKUP, 20, (MX_IP,))]
    return w


def test_after_the_primary_fails_the_backup_at_another_provider_is_opened_only_with_its_own_slot() -> None:
    w = _split_world(connections=1)
    leases = w.store._slot("default", BACKUP)[0]
    leases["another-sender"] = w.clock() + 100  # the backup's provider: its one slot taken
    mid = w.send("alice@split.test")
    assert w.run(_job(mid)) == []
    assert w.connector.opened == [] and w.peer.log == []  # no connection over the backup's cap
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DEFERRED and r.attempts == ()  # waits, no attempt
    assert r.waiting is not None and r.waiting.provider == BACKUP and r.waiting.waits == 1
    assert w.store._slot("default", PRIMARY)[0] == {}  # the primary's slot given back
    # The other sender is done: delivered on the backup, its lease counted at the backup's provider.
    leases.clear()
    w.clock.advance(shaping.SLOT_WAIT[1] + 61)
    [(job, _)] = w.jobs.sent
    assert w.run(job) == []
    [r] = w.recipients(mid)
    assert r.state is RecipientState.DELIVERED and len(r.attempts) == 1 and r.attempts[0].mx == BACKUP
    # a slot at the primary in each run (given back when it refused), one at the backup
    assert w.by[("ConnectionsInUse", BACKUP)] == 1 and w.by[("ConnectionsInUse", PRIMARY)] == 2
    assert w.store._slot("default", BACKUP)[0] == {} and w.store._slot("default", PRIMARY)[0] == {}


def test_a_session_on_the_backup_holds_the_backups_slot_not_the_primarys() -> None:
    w = _split_world(connections=5)
    held: list[tuple[int, int]] = []

    class Watching(Peer):
        def reply_to(self, command: str) -> tuple[int, str]:
            if command == "MAIL":  # mid-session: which provider holds a lease for it
                held.append((len(w.store._slot("default", BACKUP)[0]), len(w.store._slot("default", PRIMARY)[0])))
            return super().reply_to(command)

    w.connector.peers[MX_IP] = w.peer = Watching()
    mids = [w.send(f"u{i}@split.test") for i in range(3)]
    for m in mids:
        assert w.run(_job(m)) == []
    assert all(w.recipients(m)[0].state is RecipientState.DELIVERED for m in mids)
    assert held == [(1, 0)] * 3, held  # while mail flows to the backup: its lease, none at the primary


# ---- item 3: sessions pooled per site (the MX set), not per domain -----------------------------
SHARED = "mx.shared-site.test"


def _site_world(env: dict[str, str] | None = None) -> ShapedWorld:
    """a.test, b.test and c.test all have the same MX host (like Google Workspace domains)."""
    w = ShapedWorld(env)
    w.service.resolve_mx = lambda domain: [MxHost(SHARED, 10, (MX_IP,))]
    return w


def test_domains_on_the_same_mx_set_share_sessions_instead_of_opening_their_own() -> None:
    w = _site_world()
    mids = [w.send(f"u{i}@{d}") for i in range(4) for d in ("a.test", "b.test", "c.test")]
    event = {"Records": [{"messageId": f"sqs-{i}", "body": _job(m).model_dump_json()} for i, m in enumerate(mids)]}
    assert w.service.handle_sqs_event(event, lambda: 605_000)["batchItemFailures"] == []
    assert all(w.recipients(m)[0].state is RecipientState.DELIVERED for m in mids)
    # 12 jobs, 3 domains, one MX set: the site's 2 sessions (per-domain pooling opened 2 per domain: 6).
    assert len(w.connector.opened) == shaping.SESSIONS_PER_DOMAIN, len(w.connector.opened)
    assert len(w.peer.accepted) == 12


def _carried(w: ShapedWorld) -> list[set[str]]:
    """Per session opened, in order: the recipient domains it carried."""
    carried: list[set[str]] = []
    opening = w.connector.open

    async def open_(*args: Any, **kwargs: Any) -> Any:
        session = await opening(*args, **kwargs)
        domains: set[str] = set()
        carried.append(domains)
        send = session.send

        async def sending(sender: str, rcpt: str, *rest: Any, **kw: Any) -> Any:
            domains.add(rcpt.rpartition("@")[2])
            return await send(sender, rcpt, *rest, **kw)

        session.send = sending  # type: ignore[method-assign]
        return session

    w.connector.open = open_  # type: ignore[method-assign]
    return carried


def test_a_site_session_carries_several_domains_up_to_its_messages_per_connection() -> None:
    w = _site_world({"OUTPOST_SHAPING": json.dumps({SHARED: {"per_connection": 3, "connections": 2}})})
    carried = _carried(w)
    # One message, six recipients over three domains on the site, the domains at once: the
    # third domain takes a turn on the others' sessions (per domain it found the site's two
    # slots taken, and waited for shaping).
    mid = w.send(*(f"u{i}@{d}" for i in range(2) for d in ("a.test", "b.test", "c.test")))
    assert w.run(_job(mid)) == []
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 6
    assert any(len(domains) > 1 for domains in carried), carried  # one session, several domains
    assert all(s.transactions <= 3 and s.quit_sent for s in w.connector.opened)  # per_connection held
    assert len(w.connector.opened) <= 3


def test_the_pool_key_is_the_mx_set_and_the_tls_mode_never_the_domain() -> None:
    from outpost.delivery.domain import site_of

    google = [MxHost("ALT1.aspmx.l.google.com.", 5, ("192.0.2.2",)), MxHost("aspmx.l.google.com", 1, ("192.0.2.1",))]
    assert site_of(google) == site_of(list(reversed(google))) == "1:aspmx.l.google.com,5:alt1.aspmx.l.google.com"
    assert site_of(google[1:]) != site_of(google)  # an MTA-STS "enforce" subset: another site
    # An opportunistic session is never handed to a domain whose policy asks "verify" (the
    # key's mode): the MX's certificate does not verify, so b.test's mail may not go there.
    w = _site_world()
    w.connector.peers[MX_IP] = w.peer = Peer(tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", False))
    w.service.tls_policy_for = _enforcing("b.test")
    mids = [w.send(f"u{i}@{d}") for d in ("a.test", "b.test") for i in range(3)]
    event = {"Records": [{"messageId": f"sqs-{i}", "body": _job(m).model_dump_json()} for i, m in enumerate(mids)]}
    assert w.service.handle_sqs_event(event, lambda: 605_000)["batchItemFailures"] == []
    states = [w.recipients(m)[0].state for m in mids]
    assert states == [RecipientState.DELIVERED] * 3 + [RecipientState.DEFERRED] * 3, states
    assert not any(d.rcpt.endswith("@b.test") for d in w.peer.accepted)


def _enforcing(domain: str) -> Callable[[str], TlsPolicy]:
    def policy_for(name: str) -> TlsPolicy:
        if name != domain:
            return TlsPolicy(name)
        return TlsPolicy(name, StsPolicy("20240101", "enforce", (SHARED,), 86400, fetched_at=time.time()))
    return policy_for


# ---- item 1: waiting for room is cheap and bounded --------------------------------------------
class CountingMessages(FakeMessages):
    """The fake store, counting every request the sender makes of it (public methods)."""

    requests = 0
    counting = False

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and callable(value) and super().__getattribute__("counting"):
            def counted(*args: Any, **kwargs: Any) -> Any:
                type(self).requests += 1
                return value(*args, **kwargs)
            return counted
        return value


@dataclass
class Figures:
    jobs: int  # jobs the sender ran (SQS receives), the first of each message included
    requeues: float  # jobs the sender queued again, per delivered message
    requests: float  # store requests per delivered message
    first: float  # seconds from room coming back to the first delivery
    last: float  # ... to the last
    attempts: int  # attempts counted, in all


def simulate(messages: int, *, hold: float = 0.0, per_minute: int | None = None, seed: int = 7) -> Figures:
    """`messages` one-recipient messages to one provider, all due at once, on a fleet where
    another sender holds the provider's one connection slot for `hold` seconds (or where the
    provider takes `per_minute` messages a minute); every job run as it comes due, on a fake
    clock, until all are delivered."""
    rnd = random.Random(seed)
    limits = {"connections": 1} if per_minute is None else {"per_minute": per_minute}
    store = CountingMessages()
    type(store).requests = 0
    w = ShapedWorld(_limits(**limits), store=store)
    w.service.rng = rnd.random
    mids = [w.send(f"u{i}@example.test") for i in range(messages)]
    t0 = w.clock()
    leases, _ = w.slot()
    if hold:
        leases["another-sender"] = t0 + 10 * hold  # live all along, dropped by its owner at t0 + hold
    queue = [(t0, i, QueueJob(message_id=m, attempt=1)) for i, m in enumerate(mids)]
    heapq.heapify(queue)
    delivered: dict[str, float] = {}
    jobs, seq = 0, len(queue)
    store.counting = True
    while queue and jobs < 50_000:
        at, _, job = heapq.heappop(queue)
        w.clock.now = max(w.clock.now, at)
        if hold and w.clock() >= t0 + hold:
            leases.pop("another-sender", None)
        sent = len(w.jobs.sent)
        assert w.run(job) == []
        jobs += 1
        if w.recipients(job.message_id)[0].state is RecipientState.DELIVERED:
            delivered.setdefault(job.message_id, w.clock())
        for again, delay in w.jobs.sent[sent:]:
            seq += 1
            heapq.heappush(queue, (w.clock() + delay, seq, again))
    store.counting = False
    assert len(delivered) == messages
    room = t0 + hold
    return Figures(jobs, len(w.jobs.sent) / messages, type(store).requests / messages,
                   min(delivered.values()) - room, max(delivered.values()) - room,
                   sum(len(w.recipients(m)[0].attempts) for m in mids))


def _figures(label: str, f: Figures) -> None:
    print(f"{label:34s} jobs {f.jobs:5d}  requeues/msg {f.requeues:5.1f}  store requests/msg {f.requests:6.1f}  "
          f"first {f.first:5.0f} s  last {f.last:5.0f} s  attempts {f.attempts}")


def test_waiting_for_a_slot_costs_log_requeues_not_one_every_17_s() -> None:
    """10 waiters for a slot another sender holds for 10 minutes: each waits 5-30 s, then
    10-60, 20-120, then 20-120 s each time (SLOT_WAIT_GROWTH), so the re-queues and store
    requests per delivered message fall to about a third, with no attempt counted for the
    waits, and the slot's return seen within the last wait (at most 120 s)."""
    new = simulate(10, hold=600.0)
    _figures("slot held 600 s, growing waits", new)
    assert new.attempts == 10  # one attempt each: the delivery; no wait counted
    assert new.requeues <= 12 and new.last <= 4 * shaping.SLOT_WAIT[1] + 60
    old = _old(lambda: simulate(10, hold=600.0))
    _figures("slot held 600 s, before (SLOT_WAIT)", old)
    assert old.attempts == 10 and old.requeues >= 30  # one every ~17.5 s for 600 s
    assert new.requeues <= old.requeues / 2.5 and new.requests <= old.requests / 2.5


def test_a_rate_limited_backlog_comes_back_spread_not_all_at_each_window() -> None:
    """60 messages at 6 a minute: before, the whole backlog came back at every minute's
    start for 20 of it to get through (O(n^2 / rate) re-queues); now a recipient that waited
    before comes back anywhere in the next 1, 3... minutes (at most WINDOW_SPREAD, 2 minutes):
    a fifth fewer re-queues, for a drain about a fifth longer (the spread leaves the last
    windows part empty): the trade WINDOW_SPREAD sets (300 s: 38% fewer, 30-45% longer)."""
    new = simulate(60, per_minute=6)
    _figures("60 msgs at 6/min, spread", new)
    old = _old(lambda: simulate(60, per_minute=6))
    _figures("60 msgs at 6/min, before", old)
    assert new.attempts == old.attempts == 60
    assert new.requeues <= old.requeues * 0.85 and new.requests <= old.requests * 0.9
    # Throughput kept: the backlog takes its 10 minutes at 20 a minute, plus at most the spread.
    assert new.last <= old.last + shaping.WINDOW_SPREAD + 60


def _old(run: Callable[[], Figures]) -> Figures:
    """`run` under the policy the review found: every slot wait SLOT_WAIT (5-30 s), every
    full window's wait its end, however often the recipient waited before."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(shaping, "SLOT_WAIT_GROWTH", 1)
        mp.setattr(shaping, "WINDOW_SPREAD", 0.0)
        return run()
    finally:
        mp.undo()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
