"""The sender never loses an outcome and never strands a recipient (issue 3 review).

Real servers on loopback (the rig in sender_rig.py); only the clock is controlled.
- outcomes are recorded per recipient, right after its transaction, so a run killed mid-job
  (Lambda timeout) or an exception in one domain keeps the 250s already received;
- a job whose preparation fails (spec, message, signer) defers every recipient, which then
  expires in its time (4.4.7): nothing stays open forever;
- a recipient not yet due is not retried early, but always keeps a future job;
- a pooled session that turns out stale is replaced by a fresh one, never by another pooled one;
- STARTTLS refused: plaintext in opportunistic mode (Postfix "may"), 4.7.5 when TLS is required;
- a hard bounce's suppression is written before the recipient becomes final.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sender_rig import PREFIX, T0, AlwaysDefer, Rig

from outpost.delivery.transport import SessionPool, Timeouts
from outpost.models import QueueJob
from outpost.records import Suppression
from outpost.store import SuppressionStore
from outpost.stored_request import StoredRequest
from outpost_local.mx import Behaviour, GreetingReply, MxServer, MxSmtp, RcptReply

pytestmark = pytest.mark.timeout(90)


class HangOnRcpt(Behaviour):
    """RCPT TO for `address` gets no answer for a long time (the invocation dies meanwhile)."""

    def __init__(self, address: str, seconds: float = 30) -> None:
        self.address, self.seconds = address, seconds

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        if address.lower() == self.address:
            await asyncio.sleep(self.seconds)
        return None


class DropOnRset(Behaviour):
    """Once armed, close the connection instead of answering RSET (an idle-timeout drop the
    client has not noticed yet)."""

    armed = False

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if self.armed and stage == "RSET":
            server.drop()


class AdvanceClockOnGreeting(Behaviour):
    """Each connection's greeting takes `seconds` of the fake clock."""

    def __init__(self, rig: Rig, seconds: float) -> None:
        self.rig, self.seconds = rig, seconds

    def greeting(self, server: MxSmtp) -> str | None:
        self.rig.clock.advance(self.seconds)
        return None


# == (4) outcomes recorded per recipient ======================================================


def test_a_killed_run_keeps_the_outcomes_already_received(rig: Rig) -> None:
    """The Lambda timeout stops the coroutine mid-transaction: the first recipient's 250 is
    already recorded, so it is not sent again."""
    mx = rig.mx("kill.test", 2, HangOnRcpt("bob@kill.test"))
    mid = rig.send("amy@kill.test", "bob@kill.test")

    async def killed() -> None:
        pool = SessionPool()
        try:
            await asyncio.wait_for(rig.service.deliver(QueueJob(message_id=mid), pool, rig.clock() + 295), 1.5)
        except TimeoutError:
            pass
        finally:
            await pool.close()

    asyncio.run(killed())
    assert len(mx.wait_for(1)) == 1
    amy, bob = rig.rcpts(mid)
    assert amy["state"] == "delivered" and len(amy["attempts"]) == 1
    assert bob["state"] == "queued"  # still leased; the lease runs out and SQS redelivers


def test_an_exception_in_one_domain_keeps_the_other_domains_outcomes(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    mx = rig.mx("fine.test", 2)
    mid = rig.send("cat@fine.test", "dan@broken.test")
    real = rig.service.resolve_mx

    def resolve(domain: str) -> Any:
        if domain == "broken.test":
            raise RuntimeError("resolver bug")
        return real(domain)

    rig.service.resolve_mx = resolve
    with caplog.at_level(logging.ERROR, logger="outpost.sender"):
        assert rig.run(mid) == {"batchItemFailures": []}
    assert len(mx.wait_for(1)) == 1
    cat, dan = rig.rcpts(mid)
    assert cat["state"] == "delivered"
    # The unanticipated error is a transient verdict (Postal), recorded like any other.
    assert dan["state"] == "deferred" and dan["last"]["status"] == "4.0.0"
    assert "RuntimeError: resolver bug" in dan["last"]["text"] and "lease_until" not in dan
    assert any(rec.exc_info for rec in caplog.records)
    job, delay = rig.queue.sent[-1]
    assert job.not_before == pytest.approx(dan["next_attempt_at"]) and delay == pytest.approx(60)


def test_no_connect_is_started_without_time_for_it(rig: Rig) -> None:
    """The first MX's greeting eats the invocation's time; the second MX is not tried, the
    recipient is released (no attempt charged) and queued again at once."""
    assert Timeouts(connect=1, command=2, end_of_data=3).transaction_budget == 4 * 2 + 3  # RSET too
    first = rig.mx("slowmx.test", 2, [AdvanceClockOnGreeting(rig, 40), GreetingReply(421, "4.3.2 Busy")], pref=10)
    second = rig.mx("slowmx.test", 3, pref=20)
    mid = rig.send("eli@slowmx.test")
    sent_before = len(rig.queue.sent)
    rig.run(mid, remaining_ms=50_000)  # deadline T0 + 45; budget 4*3+5 = 17 s; connect needs 3+9
    assert len(first.replies("CONNECT")) == 1
    assert second.replies("CONNECT") == []  # T0+40 + 12 > T0+45: no connect
    r = rig.rcpt(mid)
    assert r["state"] == "queued" and not r.get("attempts") and "lease_until" not in r
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert delay == 10 and job.releases == 1  # a release delay, never 0


# == (5) a poisoned job ========================================================================


@pytest.mark.parametrize("poison", ["signer", "spec"])
def test_a_job_that_cannot_be_prepared_defers_then_expires(
        rig: Rig, poison: str, caplog: pytest.LogCaptureFixture) -> None:
    mx = rig.mx("poison.test", 2)
    mid = rig.send("fay@poison.test", "gus@poison.test", expires_in=600)
    if poison == "signer":
        def signer_for(domain: str) -> Any:
            raise RuntimeError("key store unreadable")
        rig.service.signer_for = signer_for
    else:
        store = rig.service.store

        class BrokenSpec(type(store)):  # type: ignore[misc]
            def load_request(self, meta: Any) -> Any:
                return StoredRequest.model_validate({"from": "not an address"})  # fails validation

        broken = BrokenSpec.__new__(BrokenSpec)
        broken.__dict__.update(store.__dict__)
        rig.service.store = broken
    with caplog.at_level(logging.ERROR, logger="outpost.sender"):
        assert rig.run(mid) == {"batchItemFailures": []}
    assert any(rec.exc_info for rec in caplog.records)
    for r in rig.rcpts(mid):
        assert r["state"] == "deferred" and r["last"]["status"] == "4.0.0"
        assert "unexpected error" in r["last"]["text"] and "lease_until" not in r
    for _ in range(10):
        if {r["state"] for r in rig.rcpts(mid)} != {"deferred"}:
            break
        rig.retry()
    assert {r["state"] for r in rig.rcpts(mid)} == {"expired"}
    assert all(r["last"]["status"] == "4.4.7" for r in rig.rcpts(mid))
    assert mx.replies("CONNECT") == []


# == (6) not before it is due ==================================================================


def test_a_duplicate_job_does_not_retry_early_but_keeps_a_future_job(rig: Rig) -> None:
    mx = rig.mx("early.test", 2, AlwaysDefer())
    mid = rig.send("hal@early.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["next_attempt_at"] == pytest.approx(T0 + 60)
    rig.clock.advance(10)
    sent_before = len(rig.queue.sent)
    rig.run(mid, attempt=1)  # a duplicate of the first job, 50 s early
    assert len(mx.replies("CONNECT")) == 1
    assert len(rig.rcpt(mid)["attempts"]) == 1
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert job.attempt == 1 and job.not_before == pytest.approx(T0 + 60) and delay == pytest.approx(50)
    rig.retry()  # at its time, it is retried
    assert len(mx.replies("CONNECT")) == 2 and len(rig.rcpt(mid)["attempts"]) == 2


# == (7) stale pooled sessions =================================================================


def test_a_second_stale_pooled_session_is_not_used(rig: Rig) -> None:
    drop = DropOnRset()
    mx = rig.mx("stale.test", 2, drop)
    mid = rig.send("ivy@stale.test")

    async def run() -> None:
        pool = SessionPool()
        try:
            for _ in range(2):  # two used sessions idle in the pool
                s = await rig.service.connector.open("mx2.stale.test", f"{PREFIX}.2")
                await s.send("warmup@sender.test", "warmup@stale.test", b"Subject: warm\r\n\r\nup\r\n")
                pool.give(("stale.test", "opportunistic"), s)
            drop.armed = True  # the server dropped both; the client does not know yet
            await rig.service.deliver(QueueJob(message_id=mid), pool, rig.clock() + 295)
        finally:
            await pool.close()

    asyncio.run(run())
    assert rig.rcpt(mid)["state"] == "delivered"
    assert [g.rcpt_tos for g in mx.received][-1] == ["ivy@stale.test"]
    assert len(mx.replies("CONNECT")) == 3  # two pooled, one fresh


# == (8) STARTTLS refused ======================================================================


class _NoTlsToday(MxSmtp):
    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to local problem")


class RefusesStarttls(MxServer):
    def _factory(self) -> MxSmtp:
        proto = super()._factory()
        proto.__class__ = _NoTlsToday
        proto._smtp_methods["STARTTLS"] = proto._tracked("STARTTLS", proto.smtp_STARTTLS)
        return proto


def _refusing_mx(rig: Rig, domain: str, n: int) -> MxServer:
    name = f"mx{n}.{domain}"
    server = RefusesStarttls(f"{PREFIX}.{n}", rig.smtp_port, None, rig.pki.server_context(name), hostname=name)
    server.start()
    rig.servers.append(server)
    rig.dns.add(domain, "MX", (10, name))
    rig.dns.add(name, "A", f"{PREFIX}.{n}")
    return server


def test_starttls_refused_continues_in_plaintext_when_opportunistic(rig: Rig) -> None:
    mx = _refusing_mx(rig, "no454.test", 2)
    mid = rig.send("jon@no454.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered", r.get("last")
    assert "tls" not in r["attempts"][-1]
    assert mx.replies("STARTTLS") == ["454 4.7.0 TLS not available due to local problem"]
    assert len(mx.wait_for(1)) == 1


def test_starttls_refused_is_a_policy_failure_when_tls_is_required(rig: Rig) -> None:
    mx = _refusing_mx(rig, "req454.test", 2)
    mid = rig.send("kay@req454.test", tls="required")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["last"]["status"] == "4.7.5"
    assert "454" in r["last"]["text"] and mx.received == []


# == (9) suppression before finality ===========================================================


def test_a_hard_bounce_suppression_survives_a_failed_write(rig: Rig) -> None:
    rig.mx("gone.test", 2, RcptReply(550, "5.1.1 <lou@gone.test>: User unknown"))
    mid = rig.send("lou@gone.test")
    real = rig.service.suppressions
    failures = [RuntimeError("throttled")]

    class Flaky(SuppressionStore):
        def add(self, suppression: Suppression) -> bool:
            if failures:
                raise failures.pop()
            return super().add(suppression)

    rig.service.suppressions = Flaky(real.ddb, real.table)
    rig.run(mid)
    for _ in range(3):  # whatever the first run left behind (a failed job or a requeue), run it again
        if rig.rcpt(mid)["state"] == "bounced":
            break
        rig.run(mid)
    assert rig.rcpt(mid)["state"] == "bounced"
    assert real.get("lou@gone.test") is not None
