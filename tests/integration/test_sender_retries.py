"""Retries, expiry and idempotency with a controllable clock, against real servers (issue 3).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Any

import pytest
from sender_rig import T0, AdvanceClockOnAccept, AlwaysDefer, Rig, commands

from outpost.models import QueueJob
from outpost.records import Suppression
from outpost.store import MessageStore
from outpost_local.dynamodb_local import ENGINE_LOCAL
from outpost_local.mx import (
    RcptReply,
    Slow,
)

pytestmark = pytest.mark.timeout(90)

# == retries, expiry, idempotency =============================================================


def test_retry_schedule_then_expiry_with_the_last_reply(rig: Rig) -> None:
    rig.mx("later.test", 2, AlwaysDefer())
    # 16 h: the whole schedule (1, 5, 15, 30 min, 1, 2, 4 h: attempts up to 7 h 51 min), then
    # every 4 h (11 h 51, 15 h 51); the next step (19 h 51) would be past the lifetime, so the
    # last attempt is a second before it ends (9 min - 1 s later); then expired.
    mid = rig.send("rae@later.test", expires_in=16 * 3600)
    rig.run(mid)
    delays = []
    while rig.rcpt(mid)["state"] == "deferred":
        job, _ = rig.queue.sent[-1]
        assert job.attempt == len(delays) + 2
        delays.append(job.not_before - rig.clock())
        rig.retry()
        assert len(delays) < 20
    r = rig.rcpt(mid)
    assert r["state"] == "expired"
    assert r["last"]["status"] == "4.4.7"
    assert "451 4.3.0 Temporary local problem" in r["last"]["text"]
    assert delays == pytest.approx([60, 300, 900, 1800, 3600, 7200, 14400, 14400, 14400, 539], abs=0.01)
    assert len(r["attempts"]) == len(delays) + 1
    assert r["attempts"][-1]["status"] == "4.3.0"  # the attempt keeps the real reply


def test_default_lifetime_is_two_days(rig: Rig) -> None:
    mid = rig.send("rae@later.test")
    stored = rig.store.load(mid)
    assert stored is not None
    assert stored.meta.deliver_until == pytest.approx(T0 + 2 * 86400)


def test_jitter_comes_from_the_rng(rig: Rig) -> None:
    rig.rng = lambda: 0.0  # the low end: -10%
    rig.build()
    rig.mx("jitter.test", 2, AlwaysDefer())
    mid = rig.send("sam@jitter.test")
    rig.run(mid)
    assert rig.rcpt(mid)["next_attempt_at"] == pytest.approx(T0 + 54)


def test_per_message_lifetime_expires_at_the_failed_attempt(rig: Rig) -> None:
    rig.mx("short.test", 2, AlwaysDefer())
    mid = rig.send("tom@short.test", expires_in=120)
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "deferred"  # next at +60 s, within the 120 s lifetime
    rig.retry()  # fails again; +300 s would be past the lifetime: the last try at +119 s
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["next_attempt_at"] == pytest.approx(T0 + 119)
    rig.retry()  # fails at the end of the lifetime
    r = rig.rcpt(mid)
    assert r["state"] == "expired" and r["last"]["status"] == "4.4.7"
    assert "451 4.3.0" in r["last"]["text"] and len(r["attempts"]) == 3


def test_a_job_arriving_after_the_lifetime_expires_without_connecting(rig: Rig) -> None:
    mx = rig.mx("late.test", 2, AlwaysDefer())
    mid = rig.send("uma@late.test", expires_in=600)
    rig.run(mid)
    rig.clock.advance(3600)
    rig.run(mid, attempt=2)
    r = rig.rcpt(mid)
    assert r["state"] == "expired" and r["last"]["status"] == "4.4.7"
    assert "451 4.3.0" in r["last"]["text"]
    assert len(mx.replies("CONNECT")) == 1  # only the first attempt connected


def test_a_retry_attempts_only_the_recipients_still_open(rig: Rig) -> None:
    mx = rig.mx("mixed.test", 2, RcptReply(451, "4.7.1 Try again later", only=["vic@mixed.test"], times=1))
    mid = rig.send("una@mixed.test", "vic@mixed.test")
    rig.run(mid)
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered", "deferred"]
    rig.retry()
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered", "delivered"]
    rcpts = [c for c in commands(mx, "RCPT")]
    assert sum("una@" in c for c in rcpts) == 1 and sum("vic@" in c for c in rcpts) == 2
    assert len(mx.received) == 2


def test_a_job_processed_twice_delivers_once(rig: Rig) -> None:
    mx = rig.mx("twice.test", 2)
    mid = rig.send("wes@twice.test", "xia@twice.test")
    rig.run(mid)
    rig.run(mid)  # SQS redelivery of the same job
    rig.run_jobs([QueueJob(message_id=mid), QueueJob(message_id=mid)])  # a duplicate in one batch
    assert len(mx.wait_for(2)) == 2
    time.sleep(0.2)
    assert len(mx.received) == 2
    assert all(len(r["attempts"]) == 1 for r in rig.rcpts(mid))


def test_a_redelivery_during_a_slow_invocation_delivers_once(rig: Rig) -> None:
    """SQS hands the job to a second container while the first is still mid-transaction.
    (Claims at the same instant: the two tests below.)"""
    mx = rig.mx("race.test", 2, Slow("MAIL", 0.6))
    mid = rig.send("yan@race.test", "zoe@race.test")
    other = Rig.__new__(Rig)  # a second "container": same stores, its own service and pool
    other.__dict__.update(rig.__dict__)
    second = other.build()
    rig.build()
    event = {"Records": [{"messageId": "x", "body": QueueJob(message_id=mid).model_dump_json()}]}
    first = threading.Thread(target=rig.service.handle_sqs_event, args=(event, lambda: 300_000))
    first.start()
    deadline = time.monotonic() + 10
    while not commands(mx, "MAIL") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.handle_sqs_event(event, lambda: 300_000) == {"batchItemFailures": []}
    first.join(30)
    assert {r["state"] for r in rig.rcpts(mid)} == {"delivered"}
    assert sorted(g.rcpt_tos[0] for g in mx.received) == ["yan@race.test", "zoe@race.test"]
    assert len(mx.replies("CONNECT")) == 1  # the second container found nothing to claim


RACES = 40  # moto's DynamoDB let 3 of 40 such races through with two winners


def _require_dynamodb_local(rig: Rig) -> None:
    """These races prove something only on an engine whose conditional writes are atomic, as
    DynamoDB's are; moto's are not (the engine runs when Java is installed: make install)."""
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run, and moto's conditional writes are not atomic")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason


def test_same_instant_claims_have_exactly_one_winner(rig: Rig) -> None:
    """8 containers claim one recipient at the same instant (threads released by a barrier,
    each with its own connection), 40 times: exactly one lease each time."""
    _require_dynamodb_local(rig)
    threads = 8
    stores = [MessageStore(rig.aws.client("dynamodb"), rig.aws.env["OUTPOST_MESSAGES_TABLE"],
                           rig.aws.client("s3"), rig.aws.env["OUTPOST_BUCKET"]) for _ in range(threads)]
    winners: list[int] = []
    for race in range(RACES):
        mid = rig.send(f"r{race}@claims.test")
        for st in stores:  # each connection open and warm before the start
            assert st.load(mid) is not None
        barrier = threading.Barrier(threads)
        won: list[bool] = [False] * threads

        def claim(i: int, mid: str = mid, barrier: threading.Barrier = barrier, won: list[bool] = won) -> None:
            barrier.wait()
            won[i] = stores[i].claim(mid, 0, rig.clock(), 600)

        pool = [threading.Thread(target=claim, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(30)
        winners.append(sum(won))
        assert "lease_until" in rig.rcpt(mid)
    assert winners == [1] * RACES


def test_same_instant_redeliveries_deliver_once(rig: Rig) -> None:
    """Two containers get the same job and start at the same instant (a barrier), 40 times:
    each recipient gets exactly one SMTP transaction and ends delivered."""
    _require_dynamodb_local(rig)
    mx = rig.mx("sametime.test", 2)
    other = Rig.__new__(Rig)  # a second "container": same stores, its own service and pool
    other.__dict__.update(rig.__dict__)
    services = [other.build(), rig.build()]
    for race in range(RACES):
        mid = rig.send(f"u{race}@sametime.test")
        event = {"Records": [{"messageId": "x", "body": QueueJob(message_id=mid).model_dump_json()}]}
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]

        def invoke(i: int, event: dict = event, barrier: threading.Barrier = barrier,
                   results: list[Any] = results) -> None:
            barrier.wait()
            results[i] = services[i].handle_sqs_event(event, lambda: 300_000)

        pool = [threading.Thread(target=invoke, args=(i,)) for i in range(2)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(30)
        assert results == [{"batchItemFailures": []}] * 2
        assert rig.rcpt(mid)["state"] == "delivered"
        assert len(mx.wait_for(race + 1)) == race + 1
    time.sleep(0.2)  # a late duplicate would land now
    got = sorted(g.rcpt_tos[0] for g in mx.received)
    assert got == sorted(f"u{race}@sametime.test" for race in range(RACES))


def test_a_lease_held_by_another_invocation_is_respected(rig: Rig) -> None:
    mx = rig.mx("leased.test", 2)
    mid = rig.send("abe@leased.test")
    assert rig.store.claim(mid, 0, rig.clock(), 600)  # another invocation holds it
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "queued" and mx.replies("CONNECT") == []
    rig.clock.advance(601)  # that invocation died; its lease ran out
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "delivered" and len(mx.wait_for(1)) == 1


def test_the_lambda_deadline_is_respected_and_the_rest_requeued(rig: Rig) -> None:
    # Each accepted message costs 100 s of (fake) time; the invocation has 60 s, so the first
    # transaction starts, the second cannot finish in time and must not start.
    mx = rig.mx("deadline.test", 2, AdvanceClockOnAccept(rig.clock, 100))
    mid = rig.send("bea@deadline.test", "cal@deadline.test", "dot@deadline.test")
    sent_before = len(rig.queue.sent)
    rig.run(mid, remaining_ms=60_000)
    states = [r["state"] for r in rig.rcpts(mid)]
    assert states == ["delivered", "queued", "queued"]
    assert all("lease_until" not in r for r in rig.rcpts(mid)[1:])  # released at once
    assert all(not r["attempts"] for r in rig.rcpts(mid)[1:])  # and not charged an attempt
    [(job, delay)] = rig.queue.sent[sent_before:]
    # Queued again after the first release delay (never 0: a release records nothing).
    assert job.message_id == mid and delay == 10 and job.releases == 1
    assert job.token is not None and job.token == rig.current_token(mid)
    for _ in range(3):  # 100 s per message also uses up the domain's time slice (60 s) each run
        if [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 3:
            break
        rig.retry()
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 3
    assert len(mx.received) == 3


def test_suppressed_recipient_is_not_sent_to(rig: Rig) -> None:
    mx = rig.mx("supp.test", 2)
    mid = rig.send("eve@supp.test", "fox@supp.test")
    rig.suppressions.add(Suppression.new("fox@supp.test", rig.clock(), source="bounce", reason="userunknown",
                                         kind="hard"))
    rig.run(mid)
    eve, fox = rig.rcpts(mid)
    assert eve["state"] == "delivered" and fox["state"] == "suppressed"
    assert [g.rcpt_tos for g in mx.wait_for(1)] == [["eve@supp.test"]]


def test_an_unexpected_exception_is_transient_and_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.mx("oops.test", 2)

    def broken_return_path(mid: str, index: int) -> str:
        raise RuntimeError("return-path key unavailable")

    rig.build()
    rig.service.return_path = broken_return_path
    mid = rig.send("gil@oops.test")
    with caplog.at_level(logging.ERROR, logger="outpost.sender"):
        rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["last"]["status"] == "4.0.0"
    assert "RuntimeError" in r["last"]["text"]
    assert any("unexpected error" in rec.getMessage() for rec in caplog.records)


