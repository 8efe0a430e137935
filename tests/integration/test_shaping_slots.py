"""Fleet-wide shaping (issue 11 items 2, 3; delivery/shaping.py) against the real engines: DynamoDB
Local (AWS's engine: moto's DynamoDB is not atomic, so a race test there proves nothing) and
aiosmtpd MX hosts on loopback (the rig in sender_rig.py).

- Threads racing for connection slots through the real store: never more than the cap's
  leases live, and an expired lease (a killed sender's) is dropped and its slot reused.
- Several sender containers (DeliveryService instances, each in its own thread with its own
  event loop and session pool, as separate Lambda containers) deliver to one MX that counts
  its concurrent connections: the fleet-wide cap holds (the most at once is the limit),
  every message is delivered once, no recipient is charged an attempt for waiting.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from sender_rig import BOUNCE_DOMAIN, SENDER_DOMAIN, VERP_KEY, Rig

from outpost.bounces.verp import make_return_path
from outpost.config import Settings
from outpost.delivery import shaping
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import SmtpConnector
from outpost.models import QueueJob
from outpost_local.dynamodb_local import ENGINE_LOCAL
from outpost_local.mx import END_OF_DATA, Behaviour, MxSmtp, Slow

pytestmark = pytest.mark.timeout(240)

CAP = 2  # connections to the provider, fleet-wide
PER_CONNECTION = 3
CONTAINERS = 3
MESSAGES = 18


def _require_dynamodb_local(rig: Rig) -> None:
    if rig.aws.dynamodb_engine != ENGINE_LOCAL:
        pytest.skip(f"needs DynamoDB Local (atomic conditional writes): {rig.aws.dynamodb_engine_reason}")


# ---- the store: racing for slots -----------------------------------------------------------------

def test_threads_racing_for_slots_never_hold_more_than_the_cap(rig: Rig) -> None:
    _require_dynamodb_local(rig)
    store, provider, cap = rig.store, f"race-{time.time_ns()}", 3
    held: set[str] = set()
    most, taken, refused = [0], [0], [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                lease = f"t{n}-{i}"
                ok, state = store.take_slot("192.0.2.9", provider, lease, time.time() + 60, cap, {}, time.time())
                if not ok:
                    with lock:
                        refused[0] += 1
                    continue
                assert state is not None and len(state.leases) <= cap  # as the engine saw it
                with lock:
                    held.add(lease)
                    taken[0] += 1
                    most[0] = max(most[0], len(held))
                time.sleep(0.005)
                with lock:
                    held.discard(lease)  # before the release: `held` never undercounts
                store.release_slot("192.0.2.9", provider, lease, {})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert most[0] == cap  # the cap was reached, and never passed
    assert refused[0] > 0 and taken[0] > cap  # there was a race, and slots were reused
    state = store.slot_state("192.0.2.9", provider)
    assert state is not None and state.leases == {}


def test_an_expired_lease_is_dropped_and_its_slot_reused(rig: Rig) -> None:
    _require_dynamodb_local(rig)
    provider = f"mx-{time.time_ns()}.expired.test"
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SHAPING": json.dumps({provider: {"connections": 2}}),
                                  "OUTPOST_SENDER_IP": "192.0.2.10"})
    now = time.time()
    for lease in ("killed-1", "killed-2"):  # two containers died holding a slot each
        ok, _ = rig.store.take_slot("192.0.2.10", provider, lease, now - 1, 2, {}, now - 200)
        assert ok
    live_until = now + 100
    shaper = shaping.Shaper(rig.store, settings, clock=time.time, rng=lambda: 0.5,
                            count_by=lambda name, n, dims: None)
    slot = asyncio.run(shaper.open(provider))
    assert isinstance(slot, shaping.Slot) and slot.lease_id is not None
    state = rig.store.slot_state("192.0.2.10", provider)
    assert state is not None and set(state.leases) == {slot.lease_id}  # both expired ones dropped
    # A live lease is never dropped: with the second slot taken too, the cap holds.
    ok, _ = rig.store.take_slot("192.0.2.10", provider, "live", live_until, 2, {}, now)
    assert ok
    waiting = asyncio.run(shaper.open(provider))
    assert not isinstance(waiting, shaping.Slot) and waiting.reason == "shaping"
    asyncio.run(shaper.release(slot))
    state = rig.store.slot_state("192.0.2.10", provider)
    assert state is not None and set(state.leases) == {"live"}


# ---- the fleet: several sender containers, one MX that counts ---------------------------------------

class CountConnections(Behaviour):
    """The MX's concurrent SMTP sessions, sampled at each greeting: the most seen at once."""

    def __init__(self) -> None:
        self.most = 0
        self.greetings = 0

    def greeting(self, server: MxSmtp) -> str | None:
        self.greetings += 1
        self.most = max(self.most, len(server.mx._protocols))
        return None


def _container(rig: Rig, settings: Settings) -> DeliveryService:
    return DeliveryService(
        settings=settings, store=rig.store, suppressions=rig.suppressions, queue=rig.queue,
        resolve_mx=rig.resolver.resolve,
        connector=SmtpConnector("mta.sender.test", port=rig.smtp_port, ca_bundle=str(rig.pki.ca_bundle),
                                timeouts=rig.timeouts),
        signer_for=lambda domain: rig.signer if domain == SENDER_DOMAIN else None,
        return_path=lambda mid, i: make_return_path(VERP_KEY, mid, i, BOUNCE_DOMAIN),
        clock=rig.clock, rng=rig.rng, slots=rig.store)


def _run_fleet(rig: Rig, services: list[DeliveryService], jobs: list[QueueJob]) -> None:
    """Each container takes its share of the jobs as one SQS batch, all containers at once."""
    shares = [jobs[i::len(services)] for i in range(len(services))]
    errors: list[BaseException] = []

    def container(service: DeliveryService, share: list[QueueJob]) -> None:
        try:
            if share:
                event = {"Records": [{"messageId": f"m{i}", "body": j.model_dump_json(exclude_none=True)}
                                     for i, j in enumerate(share)]}
                out = service.handle_sqs_event(event, lambda: 300_000)
                assert out["batchItemFailures"] == []
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=container, args=(s, share)) for s, share in zip(services, shares, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_several_sender_containers_keep_the_fleet_wide_connection_cap(rig: Rig) -> None:
    _require_dynamodb_local(rig)
    probe = CountConnections()
    domain = "capped.test"
    mx = rig.mx(domain, 30, [probe, Slow(END_OF_DATA, 0.15)])  # sessions that last, so they overlap
    provider = f"mx30.{domain}"  # an MX host no provider row knows is its own provider
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SENDER_IP": "192.0.2.11", "OUTPOST_SHAPING": json.dumps(
        {provider: {"connections": CAP, "per_connection": PER_CONNECTION}})})
    services = [_container(rig, settings) for _ in range(CONTAINERS)]
    mids = [rig.send(f"user{i}@{domain}") for i in range(MESSAGES)]
    jobs = [QueueJob(message_id=mid, attempt=1) for mid in mids]
    rounds = 0
    while jobs and rounds < 40:
        rounds += 1
        before = len(rig.queue.sent)
        _run_fleet(rig, services, jobs)
        # What the fleet queued again (recipients that waited for a slot), due after SLOT_WAIT.
        requeued = [job for job, _ in rig.queue.sent[before:]]
        latest: dict[str, QueueJob] = {j.message_id: j for j in requeued}
        jobs = [j for mid, j in latest.items() if any(r["state"] != "delivered" for r in rig.rcpts(mid))]
        if jobs:
            rig.clock.advance(max((j.not_before or 0) for j in jobs) - rig.clock() + 0.001)
    states = [r["state"] for mid in mids for r in rig.rcpts(mid)]
    assert states == ["delivered"] * MESSAGES, (rounds, states)
    assert len(mx.received) == MESSAGES  # each once
    assert probe.most == CAP, probe.most  # the fleet-wide cap held, and was used
    # Messages per connection: no session carried more than PER_CONNECTION.
    assert probe.greetings >= MESSAGES / PER_CONNECTION
    # Waiting for a slot is no attempt: one attempt per recipient, the delivery.
    assert all(len(r["attempts"]) == 1 for mid in mids for r in rig.rcpts(mid))
    state = rig.store.slot_state("192.0.2.11", provider)
    assert state is not None and state.leases == {}  # every slot released


def test_without_shaping_the_same_fleet_opens_more_connections_than_the_cap(rig: Rig) -> None:
    """The control: the cap above is the shaping's doing, not the rig's."""
    _require_dynamodb_local(rig)
    probe = CountConnections()
    domain = "uncapped.test"
    rig.mx(domain, 31, [probe, Slow(END_OF_DATA, 0.15)])
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SHAPING_ENABLED": "false"})
    services = [_container(rig, settings) for _ in range(CONTAINERS)]
    mids = [rig.send(f"user{i}@{domain}") for i in range(MESSAGES)]
    _run_fleet(rig, services, [QueueJob(message_id=mid, attempt=1) for mid in mids])
    assert all(r["state"] == "delivered" for mid in mids for r in rig.rcpts(mid))
    assert probe.most > CAP


def test_a_recipient_waiting_for_a_slot_says_so_through_the_real_store_and_the_api(rig: Rig) -> None:
    from outpost.api.service import QueryService

    _require_dynamodb_local(rig)
    domain = "waiting.test"
    mx = rig.mx(domain, 32)
    provider = f"mx32.{domain}"
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SENDER_IP": "192.0.2.12",
                                  "OUTPOST_SHAPING": json.dumps({provider: {"connections": 1}})})
    now = rig.clock()
    ok, _ = rig.store.take_slot("192.0.2.12", provider, "elsewhere", now + 120, 1, {}, now)  # another sender's
    assert ok
    service = _container(rig, settings)
    mid = rig.send(f"alice@{domain}")
    assert service.handle_sqs_event({"Records": [{"messageId": "m0", "body": QueueJob(
        message_id=mid, attempt=1).model_dump_json()}]}, lambda: 300_000)["batchItemFailures"] == []
    assert mx.received == []
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r.get("attempts", []) in ([], ())
    out = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock).message(mid)
    waiting = out["recipients"][0]["waiting"]
    assert waiting["reason"] == "shaping" and waiting["provider"] == provider
    assert waiting["until"] > out["recipients"][0]["updated_at"] and "1 connections" in waiting["detail"]
    # The other sender closes its session: the job that comes back delivers, and waits no more.
    rig.store.release_slot("192.0.2.12", provider, "elsewhere", {})
    job, _ = rig.queue.sent[-1]
    rig.clock.advance((job.not_before or now) - rig.clock() + 0.001)
    service.handle_sqs_event({"Records": [{"messageId": "m1", "body": job.model_dump_json()}]}, lambda: 300_000)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(r["attempts"]) == 1 and r.get("waiting") is None
    out = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock).message(mid)
    assert "waiting" not in out["recipients"][0]
