"""The sender under failing writes, duplicate jobs and hostile recipient domains (issue 8).

Real servers on loopback (the rig in sender_rig.py): moto for DynamoDB/SQS/S3, a real DNS
server, aiosmtpd MX hosts, TCP listeners that never speak; only the clock is controlled.
- item 9: a 2xx whose record fails is never released: the write is retried in process, and
  if the store still refuses, the lease is kept and the 2xx is carried to the next job;
- item 12: one job per message is current; duplicates are dropped instead of doubling;
- item 5: an MTA-STS lookup that stalls or eats the invocation is a recorded, backed-off
  attempt, never a release with delay 0;
- item 6: at most 5 addresses and 2 sessions per attempt and domain; no fallback reconnect
  without time for it;
- item 14b: the reply to the final dot is awaited as long as the invocation allows;
- OUTPOST_MAX_LIFETIME caps every message's lifetime.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import socket
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sender_rig import HUB, PREFIX, T0, AlwaysDefer, Rig, commands

from outpost.delivery.transport import Timeouts
from outpost.models import QueueJob, RecipientState
from outpost.store import MessageStore
from outpost.tls_policy import HttpsPolicyFetcher, MtaSts
from outpost_local.mx import END_OF_DATA, Behaviour, MxSmtp, RcptReply, Slow

pytestmark = pytest.mark.timeout(90)


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def _throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                  "Message": "Rate of requests exceeds the allowed throughput"}}, "UpdateItem")


class FlakyStore(MessageStore):
    """The real store (moto); `finish_attempt` raises DynamoDB throttling `fail` more times."""

    fail = 0
    calls = 0

    def finish_attempt(self, *args: Any, **kwargs: Any) -> bool:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise _throttled()
        return super().finish_attempt(*args, **kwargs)


def _flaky(rig: Rig, fail: int) -> FlakyStore:
    store = FlakyStore.__new__(FlakyStore)
    store.__dict__.update(rig.store.__dict__)
    store.fail = fail
    rig.service.store = store
    rig.service.sleep = _no_wait
    return store


class Blackhole:
    """A TCP listener that accepts and never says anything (no greeting): a blackholed MX."""

    def __init__(self, ip: str, port: int) -> None:
        self.sock = socket.create_server((ip, port))
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def _blackhole_mx(rig: Rig, domain: str, ns: list[int], pref: int) -> list[Blackhole]:
    """One MX host with an address (a blackhole) at each 127.0.5.n."""
    name = f"mx{ns[0]}.{domain}"
    rig.dns.add(domain, "MX", (pref, name))
    holes = []
    for n in ns:
        hole = Blackhole(f"{PREFIX}.{n}", rig.smtp_port)
        rig.servers.append(hole)
        rig.dns.add(name, "A", f"{PREFIX}.{n}")
        holes.append(hole)
    return holes


# == item 9: a 2xx is never released ===========================================================


def test_a_failed_record_after_250_is_retried_in_process(rig: Rig) -> None:
    mx = rig.mx("flaky.test", 2)
    mid = rig.send("amy@flaky.test")
    store = _flaky(rig, fail=3)  # throttled three times (after boto3's own retries), then fine
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(r["attempts"]) == 1 and "lease_until" not in r
    assert store.calls == 4
    assert len(mx.wait_for(1)) == 1
    for job, _ in rig.queue.sent[1:]:  # nothing was requeued that could send again
        rig.run_jobs([job])
    time.sleep(0.2)
    assert len(mx.received) == 1 and len(commands(mx, "MAIL")) == 1


def test_a_250_the_store_keeps_refusing_is_carried_never_sent_twice(rig: Rig) -> None:
    mx = rig.mx("flaky.test", 2)
    mid = rig.send("bob@flaky.test", "cy@flaky.test")
    store = _flaky(rig, fail=10_000)  # refused for the whole run
    sent_before = len(rig.queue.sent)
    assert rig.run(mid) == {"batchItemFailures": []}
    assert len(mx.wait_for(2)) == 2
    for r in rig.rcpts(mid):  # not recorded, but still leased: nobody may claim it
        assert r["state"] == "queued" and float(r["lease_until"]) > rig.clock() + 300
    [(carrier, delay)] = rig.queue.sent[sent_before:]
    assert delay == 10 and sorted(d["index"] for d in carrier.delivered or []) == [0, 1]
    assert carrier.token == rig.current_token(mid)
    # A job with no token (SQS redelivers the API's job, or the sweeper queues one) runs: the
    # recipients are leased, so it sends nothing, and its successor becomes the current job.
    rig.clock.advance(1)
    rig.run(mid, token=None)
    successor, _ = rig.queue.sent[-1]
    assert successor.token == rig.current_token(mid) != carrier.token
    assert successor.not_before is not None and successor.not_before > rig.clock() + 300
    # The carrier, stale now, still records first; the store still fails: carried on again.
    rig.clock.advance(carrier.not_before - rig.clock())
    rig.run_jobs([carrier])
    carrier2, delay2 = rig.queue.sent[-1]
    assert carrier2.delivered and delay2 == 30 and carrier2.releases == 2
    store.fail = 0  # the store recovers
    rig.clock.advance(carrier2.not_before - rig.clock())
    rig.run_jobs([carrier2])
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered", "delivered"]
    rig.clock.advance(successor.not_before - rig.clock())  # the lease is over; nothing is open
    rig.run_jobs([successor])
    assert all(len(r["attempts"]) == 1 for r in rig.rcpts(mid))
    time.sleep(0.2)
    assert len(mx.received) == 2 and len(commands(mx, "MAIL")) == 2  # one transaction each


# == item 12: duplicate jobs die ===============================================================


def test_duplicate_jobs_of_a_deferred_recipient_die_at_the_next_round(rig: Rig) -> None:
    mx = rig.mx("dup.test", 2, AlwaysDefer())
    mid = rig.send("dee@dup.test")
    first, _ = rig.queue.sent[-1]
    assert first.token is None  # the API's job
    # SQS delivers the API's job twice (at-least-once), to two invocations one after the other.
    round_jobs = [first, first]
    per_round = []
    for _ in range(5):
        before = len(rig.queue.sent)
        for job in round_jobs:
            rig.run_jobs([job])
        round_jobs = [j for j, _ in rig.queue.sent[before:]]
        per_round.append(len(round_jobs))
        if round_jobs:
            rig.clock.advance(max(j.not_before or 0 for j in round_jobs) - rig.clock() + 0.001)
    # The API's job has no token, so both copies run (the second finds nothing due and takes
    # over); of the two jobs they queue, only the current one survives the next round.
    assert per_round == [2, 1, 1, 1, 1]  # before: 2 every round, for ever
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and len(r["attempts"]) == 5  # one attempt per round
    assert len(commands(mx, "RCPT")) == 5
    assert round_jobs[0].token == rig.current_token(mid)  # the one job left is the current one


def test_a_job_redelivered_after_a_crash_before_it_became_current_still_runs(rig: Rig) -> None:
    rig.mx("crash.test", 2, RcptReply(451, "4.3.0 try later", times=1))
    mid = rig.send("eli@crash.test")
    api_job, _ = rig.queue.sent[-1]
    real = rig.store.replace_job

    def crash(*args: Any) -> bool:
        raise RuntimeError("killed after queueing the next job")

    rig.service.store.replace_job = crash  # type: ignore[method-assign]
    assert rig.run_jobs([api_job]) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    orphan, _ = rig.queue.sent[-1]
    assert rig.current_token(mid) is None  # the crash left the API's job current
    rig.service.store.replace_job = real  # type: ignore[method-assign]
    rig.clock.advance(61)
    rig.run_jobs([api_job])  # SQS redelivers the failed job: still current, so it runs
    assert rig.rcpt(mid)["state"] == "delivered"
    before = len(rig.queue.sent)
    rig.run_jobs([orphan])  # the job queued before the crash is stale: dropped
    assert len(rig.queue.sent) == before and len(rig.rcpt(mid)["attempts"]) == 2


# == item 5: the MTA-STS lookup counts against the budget ======================================


def _stalling_sts(rig: Rig, domain: str, fetch: Any, **sts: Any) -> None:
    rig.dns.add(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=1", ttl=0)
    rig.dns.add(f"mta-sts.{domain}", "A", HUB)
    rig.build(MtaSts(txt=rig.resolver.txt, fetch=fetch, clock=rig.clock, **sts))


def test_a_stalling_policy_host_is_a_recorded_backed_off_attempt(rig: Rig) -> None:
    mx = rig.mx("drip.test", 2)
    hole = Blackhole(HUB, 0)  # accepts the HTTPS connection, never completes the handshake
    rig.servers.append(hole)
    # The fetch would wait 30 s for the handshake; the run waits policy_wait (1 s). The bound
    # keeps a loaded machine's margin for the rest of the run (the record, the requeue): it was
    # 3 s against a 4 s fetch, which a 3x slower machine could reach.
    fetch = HttpsPolicyFetcher(lambda n: list(rig.resolver.addresses(n)), port=hole.sock.getsockname()[1],
                               timeout=30)
    _stalling_sts(rig, "drip.test", fetch)
    rig.service.policy_wait = 1.0
    mid = rig.send("fay@drip.test")
    sent_before = len(rig.queue.sent)
    started = time.monotonic()
    rig.run(mid)
    assert time.monotonic() - started < 15
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and len(r["attempts"]) == 1 and "lease_until" not in r
    assert (r["last"]["command"], r["last"]["status"]) == ("MTA-STS", "4.4.3")
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert delay == pytest.approx(60) and job.releases == 0
    assert mx.replies("CONNECT") == []


def test_a_policy_lookup_that_eats_the_invocation_never_loops(rig: Rig) -> None:
    """Before: every recipient released and requeued with delay 0, no attempt: a hot loop.
    (No negative cache here, so that every run's lookup eats the invocation.)"""
    mx = rig.mx("slowsts.test", 2)

    def slow_fetch(domain: str) -> str:
        rig.clock.advance(290)  # the lookup takes the whole invocation
        raise OSError("timed out")

    _stalling_sts(rig, "slowsts.test", slow_fetch, negative_ttl=0)
    mid = rig.send("gus@slowsts.test", expires_in=3600)
    runs = 0
    while rig.rcpt(mid)["state"] == "queued" or rig.rcpt(mid)["state"] == "deferred":
        job, delay = rig.queue.sent[-1]
        if runs:
            assert delay > 0
        rig.retry() if runs else rig.run(mid)
        runs += 1
        assert runs < 20
    r = rig.rcpt(mid)
    assert r["state"] == "expired" and all(a["status"] == "4.4.3" for a in r["attempts"])
    assert mx.replies("CONNECT") == []


def test_after_a_failed_lookup_the_negative_cache_means_no_policy(rig: Rig) -> None:
    """RFC 8461 §5: a failed fetch with no cached policy means no policy (for a while): the run
    the lookup ate records a backed-off 4.4.3, the next one delivers without looking again."""
    mx = rig.mx("slowsts2.test", 2)
    fetches = []

    def slow_fetch(domain: str) -> str:
        fetches.append(domain)
        rig.clock.advance(290)
        raise OSError("timed out")

    _stalling_sts(rig, "slowsts2.test", slow_fetch)
    mid = rig.send("hal@slowsts2.test", expires_in=3600)
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and [a["status"] for a in r["attempts"]] == ["4.4.3"]
    assert rig.queue.sent[-1][1] > 0
    rig.retry()
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(fetches) == 1 and len(mx.received) == 1


# == item 6: bounded per domain ================================================================


def test_a_blackholed_domain_tries_at_most_five_addresses(rig: Rig) -> None:
    rig.timeouts = Timeouts(connect=1, command=1, end_of_data=2)
    rig.build()
    # Three MX hosts with three addresses each: nine blackholes (mx.py caps hosts, not addresses).
    holes = [h for i in range(3) for h in _blackhole_mx(rig, "void.test", [2 + 3 * i, 3 + 3 * i, 4 + 3 * i],
                                                        pref=10 * (i + 1))]
    mid = rig.send("hal@void.test")
    started = time.monotonic()
    rig.run(mid)
    elapsed = time.monotonic() - started
    time.sleep(0.1)
    assert sum(len(h.accepted) for h in holes) == 5  # smtp_mx_address_limit
    assert elapsed < 9 * 1 - 0.5  # five connect timeouts (5 s), not nine (9 s): 3.5 s for the rest under load
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["last"]["command"] == "CONNECT"


class CloseAtRcpt(Behaviour):
    """Every RCPT gets 421 and the connection closes (a server shedding load)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        return "421 4.3.2 Too busy, closing connection"


def test_at_most_two_sessions_per_attempt_and_domain(rig: Rig) -> None:
    mx = rig.mx("busy.test", 2, CloseAtRcpt())
    mid = rig.send(*[f"u{i}@busy.test" for i in range(5)])
    rig.run(mid)
    assert len(mx.replies("CONNECT")) == 2  # smtp_mx_session_limit
    rs = rig.rcpts(mid)
    assert {r["state"] for r in rs} == {"deferred"} and all(len(r["attempts"]) == 1 for r in rs)
    assert all("session limit" in r["last"]["text"] for r in rs[2:])


class AdvanceClockOnGreeting(Behaviour):
    def __init__(self, rig: Rig, seconds: float) -> None:
        self.rig, self.seconds = rig, seconds

    def greeting(self, server: MxSmtp) -> str | None:
        self.rig.clock.advance(self.seconds)
        return None


def test_no_tls_fallback_reconnect_without_time_for_it(rig: Rig) -> None:
    # Budgets (rig timeouts 3/3/5): a session 12 s, a transaction 17 s, its record 10 s.
    # Deadline T0+55; the greeting takes 20 s, so the certificate fallback (a reconnect) would
    # start at T0+20 with 8 s left after a transaction: it must not.
    mx = rig.mx("untrusted.test", 2, AdvanceClockOnGreeting(rig, 20), tls="untrusted")
    mid = rig.send("ida@untrusted.test")
    sent_before = len(rig.queue.sent)
    rig.run(mid, remaining_ms=60_000)
    assert len(mx.replies("CONNECT")) == 1
    # The host did fail (its certificate): that is recorded as a transient host failure with
    # the reason, and the recipient follows the retry schedule.
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and len(r["attempts"]) == 1 and "lease_until" not in r
    assert "no time left for an unverified TLS retry" in r["attempts"][0]["text"]
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert delay > 0


# == item 14b: the end of data =================================================================


@pytest.mark.timeout(200)
def test_a_slow_scanning_mx_answering_after_90_s_gets_one_copy(rig: Rig) -> None:
    rig.timeouts = Timeouts(connect=3, command=3)  # the production end-of-data limits
    rig.build()
    mx = rig.mx("scan.test", 2, Slow("END_OF_DATA", 90), timeout=300)  # the server side waits too
    mid = rig.send("jo@scan.test")
    started = time.monotonic()
    rig.run(mid)
    assert time.monotonic() - started >= 90
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(r["attempts"]) == 1
    for job, _ in rig.queue.sent[1:]:
        rig.run_jobs([job])
    assert len(mx.received) == 1 and len(commands(mx, "MAIL")) == 1


def test_no_transaction_starts_without_time_to_wait_for_the_end_of_data(rig: Rig) -> None:
    rig.timeouts = Timeouts(connect=3, command=3)  # a transaction needs 4*3 + 100 s, +10 to record
    rig.build()
    mx = rig.mx("late.test", 2)
    mid = rig.send("kim@late.test")
    rig.run(mid, remaining_ms=120_000)  # 115 s: not enough for a connect and a transaction
    assert mx.replies("CONNECT") == [] and rig.rcpt(mid)["state"] == "queued"
    rig.retry()
    assert rig.rcpt(mid)["state"] == "delivered"


class AdvanceClockAtData(Behaviour):
    """The first 354 comes after `seconds` of the fake clock (a slow server)."""

    def __init__(self, rig: Rig, seconds: float) -> None:
        self.rig, self.seconds = rig, seconds

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if stage == "DATA" and self.seconds:
            self.rig.clock.advance(self.seconds)
            self.seconds = 0


def test_no_final_dot_without_time_to_hear_the_reply(rig: Rig) -> None:
    rig.timeouts = Timeouts(connect=3, command=3)
    rig.build()
    mx = rig.mx("dot.test", 2, AdvanceClockAtData(rig, 200))
    mid = rig.send("lou@dot.test")
    rig.run(mid)  # 295 s; after the 354 only 85 s are left (less 10 to record): no dot
    time.sleep(0.2)
    assert len(commands(mx, "DATA")) == 1 and mx.received == []
    r = rig.rcpt(mid)
    assert r["state"] == "queued" and not r["attempts"] and "lease_until" not in r
    rig.retry()  # a fresh invocation: delivered, once
    assert rig.rcpt(mid)["state"] == "delivered" and len(mx.wait_for(1)) == 1


def test_an_unanswered_end_of_data_is_deferred_with_a_note(rig: Rig) -> None:
    rig.timeouts = Timeouts(connect=1, command=1, end_of_data=1)
    rig.build()
    rig.mx("mute.test", 2, Slow("END_OF_DATA", 3))
    mid = rig.send("lee@mute.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and r["last"]["command"] == "EOD"
    assert "may have accepted the message" in r["last"]["text"]


# == OUTPOST_MAX_LIFETIME ======================================================================


def test_the_operator_lifetime_caps_every_message(rig: Rig) -> None:
    rig.settings = dataclasses.replace(rig.settings, max_lifetime=600)
    rig.build()
    rig.mx("cap.test", 2, AlwaysDefer())
    mid = rig.send("max@cap.test", expires_in=86400)  # stored with a day (an API without the cap)
    rig.run(mid)
    assert rig.rcpt(mid)["next_attempt_at"] == pytest.approx(T0 + 60)
    for _ in range(10):
        if rig.rcpt(mid)["state"] != "deferred":
            break
        rig.retry()
    r = rig.rcpt(mid)
    assert r["state"] == RecipientState.EXPIRED.value and r["last"]["status"] == "4.4.7"
    assert rig.clock() <= T0 + 600


def test_the_api_applies_the_operator_lifetime(rig: Rig) -> None:
    rig.api.max_lifetime = 3600
    mid = rig.send("ned@cap.test")  # no expires_in
    stored = rig.store.load(mid)
    assert stored is not None and stored.meta.deliver_until == pytest.approx(T0 + 3600)
    mid = rig.send("ned@cap.test", expires_in=86400)
    stored = rig.store.load(mid)
    assert stored is not None and stored.meta.deliver_until == pytest.approx(T0 + 3600)
    mid = rig.send("ned@cap.test", expires_in=600)  # shorter than the cap: as asked
    stored = rig.store.load(mid)
    assert stored is not None and stored.meta.deliver_until == pytest.approx(T0 + 600)


# == item 13: memory ===========================================================================


def test_content_is_normalised_and_dot_stuffed_across_pieces(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content goes out in pieces (transport.CHUNK); lines split across pieces and parts,
    lone LF and CR line ends, and leading dots all arrive as one normalised message."""
    from outpost.delivery import transport

    monkeypatch.setattr(transport, "CHUNK", 64)
    mx = rig.mx("pieces.test", 2)
    sig = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n"
    lines = [b".leading dot", b"..two dots", b"x" * 200, b"lf only", b"cr only", b"", b"."]
    body = b"Subject: pieces\r\n\r\n" + b"\n".join(lines[:4]) + b"\n" + lines[4] + b"\r" + b"\r\n".join(lines[5:])
    expected = (sig + body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")) + b"\r\n"

    async def run() -> None:
        s = await rig.service.connector.open("mx2.pieces.test", f"{PREFIX}.2")
        try:
            await s.send("a@sender.test", "b@pieces.test", (sig, body))
        finally:
            await s.close()

    asyncio.run(run())
    [got] = mx.wait_for(1)
    assert got.data.replace(b"\r\n", b"\n") == expected.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n" or \
        got.data == expected


SINK = r'''
import asyncio, sys
async def handle(r, w):
    w.write(b"220 sink\r\n")
    while line := await r.readline():
        cmd = line[:4].upper()
        if cmd == b"EHLO":
            w.write(b"250-sink\r\n250 SIZE 100000000\r\n")
        elif cmd == b"DATA":
            w.write(b"354 go\r\n")
            await w.drain()
            tail = b""
            while not tail.endswith(b"\r\n.\r\n"):
                chunk = await r.read(1 << 20)
                if not chunk:
                    return
                tail = (tail + chunk)[-5:]
            w.write(b"250 2.0.0 Ok\r\n")
        else:
            w.write(b"250 ok\r\n")
        await w.drain()
async def main():
    s = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]))
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
'''


SENDER = r'''
import asyncio, json, sys, time, tracemalloc
sys.path[:0] = [sys.argv[1]]
from outpost.delivery.transport import SmtpConnector, Timeouts
ip, port, mib, ca = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
line = b"x" * 76 + b"\r\n"
message = b"DKIM-Signature: x\r\nSubject: big\r\n\r\n" + line * (mib * 1024 * 1024 // len(line))
connector = SmtpConnector("mta.sender.test", port=port, ca_bundle=ca,
                          timeouts=Timeouts(connect=3, command=3, end_of_data=5))
async def run():
    s = await connector.open("sink.test", ip)
    tracemalloc.start()
    try:
        reply = await s.send("a@sender.test", "b@sink.test", message)
        return reply.code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await s.close()
started = time.thread_time()
code, peak = asyncio.run(run())
print(json.dumps({"code": code, "peak": peak, "cpu": time.thread_time() - started}))
'''


@pytest.mark.parametrize("mib", [4, 16, 32])
def test_sending_a_large_message_costs_no_copy_of_it(rig: Rig, mib: int) -> None:
    """Before: normalising, dot-stuffing and framing the content made 3-4 copies of it (a
    41.6 MB message peaked at ~290 MB with building and signing). Now the transport holds
    about a piece (1 MiB) at a time, whatever the size. The sink runs in another process so
    that only the sender's allocations are traced, and so does the sender: tracemalloc counts
    every thread of its process, and in the full suite the session's local stack polls in
    threads of this one (~100 KB within a second, idle), while the transport's own peak is
    5.94 MB of the 6 MiB bound (355 KB of headroom). Times are the sender's CPU time, which a
    loaded machine does not stretch."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    layer = str(Path(__file__).resolve().parents[2] / "layers" / "outpost")
    ip = f"{PREFIX}.2"
    sink = subprocess.Popen([sys.executable, "-c", SINK, ip, str(rig.smtp_port)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        proc = subprocess.run([sys.executable, "-c", SENDER, layer, ip, str(rig.smtp_port), str(mib),
                               str(rig.pki.ca_bundle)], capture_output=True, text=True, timeout=120, check=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["code"] == 250
        assert out["peak"] < 6 * 1024 * 1024, f"{out['peak'] / 1e6:.1f} MB traced for a {mib} MiB message"
        assert out["cpu"] < 2 + mib / 4  # linear, and cheap
    finally:
        sink.terminate()
        sink.wait(10)


def test_the_memory_budget_admits_one_large_message_at_a_time(rig: Rig) -> None:
    rig.settings = dataclasses.replace(rig.settings, sender_memory_budget=10_000)
    rig.build()
    mx = rig.mx("budget.test", 2, Slow("END_OF_DATA", 1.0))
    first = rig.send("ann@budget.test", text="a" * 1000)  # ~1.6 KB: costs ~10 KB, the whole budget
    second = rig.send("bea@budget.test", text="b" * 1000)
    jobs = [QueueJob(message_id=m) for m in (first, second)]
    # Time for both in turn: the second waits for the first, then goes (never two at once).
    assert rig.run_jobs(jobs) == {"batchItemFailures": []}
    assert rig.rcpt(first)["state"] == rig.rcpt(second)["state"] == "delivered"
    order = [c for c, _ in mx.log if c.split(":")[0].upper() in ("MAIL FROM", ".") or c == "."]
    assert [c.upper()[:4] for c in order] == ["MAIL", ".", "MAIL", "."]


def test_a_job_with_no_room_in_the_budget_in_time_is_released_without_an_attempt(rig: Rig) -> None:
    rig.settings = dataclasses.replace(rig.settings, sender_memory_budget=10_000)
    rig.build()
    mx = rig.mx("budget.test", 2, Slow("END_OF_DATA", 2.0))
    first = rig.send("cal@budget.test", text="a" * 1000)
    second = rig.send("dan@budget.test", text="b" * 1000)
    sent_before = len(rig.queue.sent)
    # 36 s: a connect and a transaction need 30 s, so the second job may wait 1 s for room.
    rig.run_jobs([QueueJob(message_id=first), QueueJob(message_id=second)], remaining_ms=36_000)
    states = {m: rig.rcpt(m)["state"] for m in (first, second)}
    assert sorted(states.values()) == ["delivered", "queued"]  # whichever took the budget first
    waited = next(m for m, st in states.items() if st == "queued")
    r = rig.rcpt(waited)
    assert not r["attempts"] and "lease_until" not in r
    [(job, delay)] = [(j, d) for j, d in rig.queue.sent[sent_before:] if j.message_id == waited]
    assert delay == 10 and job.releases == 1
    rig.retry()
    assert rig.rcpt(waited)["state"] == "delivered" and len(mx.received) == 2


# == head-of-line blocking =====================================================================


def test_a_slow_domain_gets_a_time_slice_not_the_whole_batch(rig: Rig) -> None:
    from sender_rig import AdvanceClockOnAccept

    slow = rig.mx("slow.test", 2, AdvanceClockOnAccept(rig.clock, 40))  # 40 s per message
    fast = rig.mx("fast.test", 3)
    mid = rig.send(*[f"s{i}@slow.test" for i in range(4)], "f@fast.test")
    sent_before = len(rig.queue.sent)
    rig.run(mid)
    states = [r["state"] for r in rig.rcpts(mid)]
    # s0 at T0, s1 at T0+40 (within the 60 s slice), s2 would start at T0+80: released.
    assert states == ["delivered", "delivered", "queued", "queued", "delivered"]
    assert all(not r["attempts"] and "lease_until" not in r for r in rig.rcpts(mid)[2:4])
    assert len(fast.wait_for(1)) == 1 and len(slow.received) == 2
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert delay == 10 and job.releases == 1
    rig.retry()
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 5 and len(slow.received) == 4


def test_a_receiver_slow_to_open_is_handed_to_the_slow_lane(rig: Rig) -> None:
    """Head-of-line blocking: a new-mail job must not wait on an MX that takes long to greet;
    its recipients go, with no attempt counted, to a slow-lane job that waits as long as needed."""
    from outpost_local.mx import GREETING

    # A greeting after 8 s (within a 12 s connect timeout, so that the slow lane can wait for
    # it) against a 2 s SLOW_OPEN: quick.test's first session (DNS, TLS) opens well within the
    # limit on a loaded machine, and the run is far from the greeting. (It was 0.5 s against
    # 2 s with a 1.8 s bound: a 3x slower machine could fail it either way.)
    rig.timeouts = Timeouts(connect=12, command=3)
    rig.build()
    rig.service.SLOW_OPEN = 2.0
    slow = rig.mx("tarpit.test", 2, Slow(GREETING, 8.0))
    fast = rig.mx("quick.test", 3)
    mid = rig.send("s@tarpit.test", "f@quick.test")
    sent_before = len(rig.queue.sent)
    started = time.monotonic()
    rig.run_jobs([QueueJob(message_id=mid)])  # the API's job (new-mail lane)
    assert time.monotonic() - started < 6.0  # not held by the 8 s greeting
    s, f = rig.rcpts(mid)
    assert f["state"] == "delivered" and len(fast.wait_for(1)) == 1
    assert s["state"] == "queued" and not s["attempts"] and "lease_until" not in s
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert job.slow and job.token is None and delay == 0
    rig.run_jobs([job])  # the slow lane waits for the greeting
    assert rig.rcpts(mid)[0]["state"] == "delivered" and len(slow.wait_for(1)) == 1
    # The container remembers the slow domain: the next new mail to it is handed off at once.
    second = rig.send("t@tarpit.test")
    connects = len(slow.replies("CONNECT"))
    sent_before = len(rig.queue.sent)
    started = time.monotonic()
    rig.run_jobs([QueueJob(message_id=second)])
    assert time.monotonic() - started < rig.service.SLOW_OPEN and len(slow.replies("CONNECT")) == connects
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert job.slow and delay == 0 and rig.rcpts(second)[0]["state"] == "queued"


@pytest.mark.parametrize("stage", [END_OF_DATA])  # slow before the dot: test_sender_slow_lane.py
def test_a_receiver_slow_after_the_greeting_is_handed_to_the_slow_lane(rig: Rig, stage: str) -> None:
    """Head-of-line blocking, the other shape: an MX that greets at once, then answers slowly
    (a content scan before the final reply). On the new-mail lane the transaction in flight
    completes and is recorded (a stall before the dot abandons it instead); between
    transactions, the domain's other
    recipients go, with no attempt counted, to a slow-lane job, and the container remembers
    the domain. The batch (and the healthy mail in it) is not held for the domain's slice."""
    # A 3 s scan against a 1.5 s SLOW_TRANSACTION (quick.test's transactions must end within it
    # on a loaded machine), the end of data waited up to 8 s; the bound below is 2.5 stalls,
    # four would be 4. (It was 1.2 s, 0.8 s and 3.6 s: margins a 3x slower machine could eat.)
    stall = 3.0
    rig.timeouts = Timeouts(connect=3, command=3, end_of_data=8)
    rig.build()
    rig.service.SLOW_TRANSACTION = 1.5
    slow = rig.mx("scanning.test", 2, Slow(stage, stall))  # scan.test: marked slow above
    fast = rig.mx("quick.test", 3)
    first = rig.send(*(f"s{i}@scanning.test" for i in range(4)), "f@quick.test")
    other = rig.send("g@quick.test")  # another message in the same batch, all healthy
    sent_before = len(rig.queue.sent)
    started = time.monotonic()
    rig.run_jobs([QueueJob(message_id=first), QueueJob(message_id=other)])  # the API's jobs
    # One slow transaction, not the four that would hold the batch (60 s slice: all four).
    assert time.monotonic() - started < 2.5 * stall
    assert len(fast.wait_for(2)) == 2
    assert rig.rcpts(other)[0]["state"] == "delivered" and rig.rcpts(first)[4]["state"] == "delivered"
    done, *rest = rig.rcpts(first)[:4]
    assert done["state"] == "delivered" and len(done["attempts"]) == 1  # the one in flight
    for r in rest:
        assert r["state"] == "queued" and not r["attempts"] and "lease_until" not in r
    [(job, delay)] = rig.queue.sent[sent_before:]  # only the slow lane's job
    assert job.message_id == first and job.slow and job.token is None and delay == 0
    rig.run_jobs([job])  # the slow lane waits as long as the receiver needs
    assert [r["state"] for r in rig.rcpts(first)] == ["delivered"] * 5
    copies = collections.Counter(a for m in slow.wait_for(4) for a in m.rcpt_tos)
    assert copies == {f"s{i}@scanning.test": 1 for i in range(4)}  # each exactly once
    # The container remembers the slow domain: the next new mail to it is handed off at once.
    second = rig.send("t@scanning.test")
    connects = len(slow.replies("CONNECT"))
    sent_before = len(rig.queue.sent)
    rig.run_jobs([QueueJob(message_id=second)])
    assert len(slow.replies("CONNECT")) == connects and rig.rcpts(second)[0]["state"] == "queued"
    [(job, delay)] = rig.queue.sent[sent_before:]
    assert job.slow and delay == 0
