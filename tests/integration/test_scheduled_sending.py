"""Scheduled sending and cancel (issue 14 item 3) against real components: DynamoDB Local (the
store's conditional writes as AWS's engine evaluates them), the real sender, a real MX on
loopback with STARTTLS verified against the test CA, the real DNS server. Only the clock is
controlled (sender_rig.FakeClock, shared by the API's service, the sender and the sweeper), so
"delivered at its time, not before" runs without waiting real hours.

The race test runs the real sender and a cancel in two threads, many rounds, and checks every
recipient against what the MX really received.
"""

from __future__ import annotations

import email
import functools
import random
import shutil
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from sender_rig import T0, AlwaysDefer, Rig, commands

from outpost.api.auth import Principal
from outpost.api.scheduled import cancel_message
from outpost.api.service import QueryService
from outpost.clock import iso
from outpost.models import QueueJob
from outpost.records import Suppression
from outpost.store import TTL_MARGIN, rcpt_sk
from outpost.sweeper import Sweeper
from outpost_local.dynamodb_local import ENGINE_LOCAL

pytestmark = pytest.mark.timeout(240)

HOUR = 3600.0
KEY = Principal(key_id="k1", name="it", scopes=frozenset({"send", "read"}), domains=None)


def _dynamodb_local(rig: Rig) -> None:
    """The race tests need AWS's engine: moto's conditional writes are not atomic."""
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run, and moto's conditional writes are not atomic")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; their results, in order."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        out[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _after(seconds: float, call: Callable[[], Any]) -> Any:
    time.sleep(max(0.0, seconds))
    return call()


def _received_rcpts(mx) -> list[str]:  # type: ignore[no-untyped-def]
    return [r for m in mx.received for r in m.rcpt_tos]


def test_scheduled_mail_is_delivered_at_its_time_and_no_job_sends_it_before(rig: Rig) -> None:
    mx = rig.mx("sched.test", 2)
    at = T0 + 3 * HOUR
    mid = rig.send("ann@sched.test", send_at=iso(at))
    assert rig.rcpt(mid)["state"] == "scheduled" and rig.rcpt(mid)["next_attempt_at"] == at
    [(api_job, delay)] = rig.queue.sent
    assert api_job.not_before == at and delay == 3 * HOUR
    # The API's job, early: it hops (SQS's 15 minutes at most; then again), nothing is sent.
    rig.run_jobs([api_job])
    hop, hop_delay = rig.queue.sent[-1]
    assert hop.not_before == at and hop_delay == 3 * HOUR
    # Five seconds before: a duplicate or a rescue job (no not_before), and the sweeper.
    rig.clock.advance(3 * HOUR - 5)
    rig.run_jobs([QueueJob(message_id=mid), QueueJob(message_id=mid, token="stale")])
    sweep = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock, grace=0).sweep()
    assert sweep.overdue == 0
    assert not rig.store.start_scheduled(mid, 0, rig.clock())  # DynamoDB's condition: not yet
    assert rig.rcpt(mid)["state"] == "scheduled" and mx.received == [] and commands(mx, "EHLO") == []
    # At its time: delivered through the real MX, with send_at as the Date.
    rig.clock.advance(5)
    rig.run_jobs([hop])
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and r["attempts"][0]["at"] >= iso(at)
    [got] = mx.received
    assert got.rcpt_tos == ["ann@sched.test"] and got.tls
    assert parsedate_to_datetime(email.message_from_bytes(got.data)["Date"]).timestamp() == at
    # Redeliveries and duplicates after it change nothing.
    rig.run_jobs([hop, api_job, QueueJob(message_id=mid)])
    assert len(mx.received) == 1


def test_a_lost_job_is_rescued_by_the_sweeper_after_send_at(rig: Rig) -> None:
    mx = rig.mx("sched.test", 2)
    at = T0 + HOUR
    mid = rig.send("bo@sched.test", send_at=iso(at))
    rig.queue.sent.clear()  # the job is lost (a DLQ, a dropped hop)
    sweeper = Sweeper(store=rig.store, queue=rig.queue, clock=rig.clock, grace=900)
    rig.clock.advance(HOUR + 899)
    assert sweeper.sweep().overdue == 0
    rig.clock.advance(2)
    assert sweeper.sweep().messages == 1  # the store's due index had it at send_at
    [(job, _)] = rig.queue.sent
    rig.run_jobs([job])
    assert rig.rcpt(mid)["state"] == "delivered" and _received_rcpts(mx) == ["bo@sched.test"]


def test_the_records_outlive_the_scheduled_delivery_deadline(rig: Rig) -> None:
    at = T0 + 29 * 86400
    mid = rig.send("cy@sched.test", send_at=iso(at), expires_in=14 * 86400)
    ddb = rig.aws.client("dynamodb")
    for sk in ("META", rcpt_sk(0)):
        item = ddb.get_item(TableName=rig.store.table, Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": sk}})["Item"]
        assert int(item["expires_at"]["N"]) >= at + 14 * 86400 + TTL_MARGIN
    stored = rig.store.load(mid)
    assert stored is not None and stored.meta.deliver_until == at + 14 * 86400


def test_an_address_suppressed_while_scheduled_is_not_sent_to(rig: Rig) -> None:
    mx = rig.mx("sched.test", 2)
    mid = rig.send("di@sched.test", send_at=iso(T0 + HOUR))
    rig.suppressions.add(Suppression.new("di@sched.test", rig.clock(), source="manual", reason="left",
                                         kind="manual"))
    rig.clock.advance(HOUR)
    rig.run_jobs([QueueJob(message_id=mid)])
    assert rig.rcpt(mid)["state"] == "suppressed" and mx.received == [] and commands(mx, "EHLO") == []


def test_a_deferred_recipient_canceled_between_attempts_is_never_attempted_again(rig: Rig) -> None:
    mx = rig.mx("later.test", 2, AlwaysDefer())
    mid = rig.send("ed@later.test")
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "deferred"
    rcpts = len(commands(mx, "RCPT"))
    jobs = len(rig.queue.sent)
    out = cancel_message(rig.store, mid, KEY, rig.clock)
    assert out["canceled"] == 1 and out["recipients"][0]["status"] == "canceled"
    rig.retry()  # its next attempt's job, at its time: all canceled, so it ends quietly
    assert len(commands(mx, "RCPT")) == rcpts and len(rig.queue.sent) == jobs
    assert rig.rcpt(mid)["state"] == "canceled" and "due_at" not in rig.rcpt(mid)


def test_list_by_status_scheduled_and_canceled(rig: Rig) -> None:
    kept = rig.send("fay@sched.test", send_at=iso(T0 + HOUR))
    gone = rig.send("fay@sched.test", send_at=iso(T0 + 2 * HOUR))
    cancel_message(rig.store, gone, KEY, rig.clock)
    q = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock)
    for status, want in (("scheduled", kept), ("canceled", gone)):
        for recipient in ("fay@sched.test", None):
            page = q.messages(recipient=recipient, status=status, since=None, limit=50, cursor=None)
            ids = {i["id"] for i in page["items"]}
            assert want in ids and {i["status"] for i in page["items"]} == {status}, (status, recipient)


def test_claim_and_cancel_on_dynamodb_local_never_both_win(rig: Rig) -> None:
    """The two conditional writes alone, from two threads at once, many rounds."""
    _dynamodb_local(rig)
    wins = {"claim": 0, "cancel": 0}
    for n in range(40):
        mid = rig.send(f"g{n}@race.test")
        claimed, canceled = _together(functools.partial(rig.store.claim, mid, 0, rig.clock(), 300),
                                      functools.partial(rig.store.cancel, mid, 0, rig.clock()))
        got = {"claim": claimed, "cancel": canceled}
        assert got["claim"] != got["cancel"], got  # exactly one
        state = rig.rcpt(mid)["state"]
        assert state == ("queued" if got["claim"] else "canceled")
        wins["claim" if got["claim"] else "cancel"] += 1
    print("claim/cancel wins", wins)


def test_cancel_racing_the_real_sender_ends_each_recipient_canceled_or_delivered_never_both(rig: Rig) -> None:
    """The real sender (claim, STARTTLS, DATA, records) in one thread, a cancel in another,
    started together with a spread of offsets; then every recipient is checked against the MX."""
    _dynamodb_local(rig)
    mx = rig.mx("race.test", 2)
    rng = random.Random(14)
    totals = {"canceled": 0, "delivered": 0}
    mixed = 0
    for n in range(16):
        addrs = [f"r{n}-{i}@race.test" for i in range(4)]
        mid = rig.send(*addrs)
        offset = -0.06 + 0.34 * n / 15 + rng.uniform(-0.02, 0.02)  # < 0: the cancel starts first
        _, answer = _together(
            functools.partial(_after, -offset, functools.partial(rig.run_jobs, [QueueJob(message_id=mid)])),
            functools.partial(_after, offset, functools.partial(cancel_message, rig.store, mid, KEY, rig.clock)))
        received = _received_rcpts(mx)
        states = [r["state"] for r in rig.rcpts(mid)]
        for addr, state, said in zip(addrs, states, answer["recipients"], strict=True):
            assert state in ("canceled", "delivered"), (addr, state)  # never open, nothing else
            assert received.count(addr) == (1 if state == "delivered" else 0), (addr, state)
            if said["status"] == "canceled":
                assert state == "canceled"  # what the answer called canceled stayed canceled
            elif said["in_transaction"]:
                assert state == "delivered"  # the transaction it was in finished
            totals[state] += 1
        mixed += len(set(states)) > 1
    print("race totals", totals, "rounds with both outcomes", mixed)
    assert totals["canceled"] and totals["delivered"], totals  # both sides won some


class _CountingDdb:
    """The store's DynamoDB client, with every call counted by name and each query's consumed
    read capacity (ReturnConsumedCapacity, as AWS bills it) summed."""

    def __init__(self, ddb: Any) -> None:
        self._ddb, self.calls, self.read_units = ddb, [], 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ddb, name)
        if not callable(attr) or name == "exceptions":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in ("query", "get_item"):
                kwargs["ReturnConsumedCapacity"] = "TOTAL"
            out = attr(*args, **kwargs)
            self.read_units += float((out.get("ConsumedCapacity") or {}).get("CapacityUnits") or 0)
            return out

        return call


def test_a_hop_reads_one_page_of_a_50_recipient_message_and_a_canceled_one_ends(rig: Rig) -> None:
    """On DynamoDB Local: the hop of a scheduled 50-recipient message whose first recipient is
    open makes one query (8 items) where it read the whole message; once every recipient is
    canceled, the next hop ends the job (nothing queued) and nothing is sent."""
    _dynamodb_local(rig)
    mx = rig.mx("sched.test", 2)
    mid = rig.send(*[f"r{i}@sched.test" for i in range(50)], send_at=iso(T0 + 3 * HOUR))
    [(job, _)] = rig.queue.sent
    real = rig.store.ddb
    whole = _CountingDdb(real)
    rig.store.ddb = whole
    try:
        assert rig.store.load(mid) is not None  # what each hop read before: the whole message
        rig.store.ddb = counted = _CountingDdb(real)
        rig.run_jobs([job])
    finally:
        rig.store.ddb = real
    hop, delay = rig.queue.sent[-1]
    assert len(rig.queue.sent) == 2 and hop.not_before == T0 + 3 * HOUR and delay == 3 * HOUR
    assert counted.calls == ["query"], counted.calls  # one page, and nothing else read or written
    print(f"\nhop of 50 recipients: {counted.read_units} read units (the whole message: {whole.read_units}, "
          f"{whole.calls.count('query')} queries)")
    assert counted.read_units <= 1.0 < whole.read_units
    for i in range(50):
        assert rig.store.cancel(mid, i, rig.clock())
    rig.run_jobs([hop])
    assert len(rig.queue.sent) == 2  # the hop ended: no job queued
    rig.clock.advance(3 * HOUR)
    rig.run_jobs([hop, job])
    assert mx.received == [] and {r["state"] for r in rig.rcpts(mid)} == {"canceled"}
    gone = rig.send("g@sched.test", send_at=iso(T0 + 6 * HOUR))  # its META gone (a discard): none open
    real.delete_item(TableName=rig.store.table, Key={"pk": {"S": f"MSG#{gone}"}, "sk": {"S": "META"}})
    assert rig.store.any_open(gone) is False
