"""Issue 11 item 4 against real servers on loopback (sender_rig.py: DynamoDB Local, SQS, a real
DNS server, aiosmtpd MX hosts with STARTTLS): a local MX under Gmail's MX name
(gmail-smtp-in.l.google.com, served by the local DNS server for gmail.test and
googlemail.test) answers `421 4.7.28` at RCPT, once. The sender container that meets it
suspends Google for the sending IP in DynamoDB; a second container does not connect to it
while the suspension lasts (connections counted at the MX); after it, everything is
delivered, and the attempts stay bounded (1 + one per recipient). Two containers recording
a suspension at once raise the level once (DynamoDB Local's conditional write)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from sender_rig import BOUNCE_DOMAIN, SENDER_DOMAIN, VERP_KEY, Rig

from outpost.api.service import QueryService
from outpost.bounces.verp import make_return_path
from outpost.delivery.service import DeliveryService
from outpost.delivery.suspension import Policy, forget_at, next_suspension
from outpost.delivery.transport import SmtpConnector
from outpost.models import QueueJob
from outpost.records import Suspension
from outpost_local.mx import RcptReply

pytestmark = pytest.mark.timeout(120)

GMAIL_MX = "gmail-smtp-in.l.google.com"
THROTTLE = ("4.7.28 [127.0.5.1] Our system has detected an unusual rate of unsolicited mail originating "
            "from your IP address. Mail sent from your IP address has been temporarily rate limited.")


class CountedThrottle(RcptReply):
    """421 4.7.28 at RCPT for the first `times` recipients, counting every connection and the
    most open at once."""

    def __init__(self, times: int) -> None:
        super().__init__(421, THROTTLE, times=times)
        self.connections = 0
        self.most_at_once = 0

        self.quit: set[int] = set()  # connections whose client said QUIT (closing)

    def greeting(self, server: Any) -> str | None:
        self.connections += 1
        # Open at once: the connections the server has not seen end, nor heard QUIT on (the
        # server notices the client's close only a moment after the QUIT).
        live = [p for p in server.mx._protocols if id(p) not in self.quit]
        self.most_at_once = max(self.most_at_once, len(live))
        return None

    async def after_reply(self, stage: str, reply: str, server: Any) -> None:
        if stage == "QUIT":
            self.quit.add(id(server))


def container(rig: Rig, ip: str) -> tuple[DeliveryService, dict[str, int]]:
    """Another sender container: its own DeliveryService (memory, sessions) over the same
    DynamoDB tables, DNS and MX hosts."""
    counts: dict[str, int] = {}

    def count(name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n

    svc = DeliveryService(
        settings=dataclasses.replace(rig.settings, sender_ip=ip, throttle_backoff=(4, 8)),
        store=rig.store, suppressions=rig.suppressions, queue=rig.queue, resolve_mx=rig.resolver.resolve,
        connector=SmtpConnector("mta.sender.test", port=rig.smtp_port, ca_bundle=str(rig.pki.ca_bundle),
                                timeouts=rig.timeouts),
        signer_for=lambda domain: rig.signer if domain == SENDER_DOMAIN else None,
        return_path=lambda mid, i: make_return_path(VERP_KEY, mid, i, BOUNCE_DOMAIN),
        clock=rig.clock, rng=rig.rng, count=count, suspensions=rig.store)
    return svc, counts


def test_a_throttle_suspends_google_for_every_container_until_it_ends(rig: Rig) -> None:
    ip = "203.0.113.11"
    gmail = CountedThrottle(times=1)
    mx = rig.mx("gmail.test", 7, gmail, name=GMAIL_MX)
    rig.dns.add("googlemail.test", "MX", (10, GMAIL_MX))  # another of Google's domains, same MX
    other = rig.mx("other.test", 8)
    a, a_counts = container(rig, ip)
    b, b_counts = container(rig, ip)
    queries = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock)

    first = rig.send("u1@gmail.test", "u2@gmail.test", "x@other.test")
    rig.service = a
    start = rig.clock()
    rig.run_jobs([QueueJob(message_id=first)])
    u1, u2, x = rig.rcpts(first)
    assert x["state"] == "delivered" and len(other.wait_for(1)) == 1
    assert (u1["state"], len(u1["attempts"]), u1["attempts"][0]["code"]) == ("deferred", 1, 421)
    assert (u2["state"], u2.get("attempts") or []) == ("deferred", [])  # held, no attempt
    assert gmail.connections == 1 and mx.received == []
    # Google's 10-minute minimum, scaled with the shortened schedule (4, 8 s: the first step is
    # 1/150 of the default 600 s, so Google's 600 s becomes 4 s).
    until = start + 4
    suspension = rig.store.suspension(ip, "google")
    assert suspension is not None and (suspension.level, suspension.until) == (1, until)
    assert u2["waiting"] == {"reason": "suspended", "provider": "google", "until": until,
                             "detail": f"421 {THROTTLE}", "waits": 0}  # (waits: shaping's count)
    assert a_counts["Throttled"] == 1 and a_counts["Suspended"] == 1
    view = queries.message(first)["recipients"][1]["waiting"]
    assert view["reason"] == "suspended" and view["provider"] == "google"

    # A second container, with no memory of its own: it asks DynamoDB and does not connect.
    second = rig.send("v@googlemail.test")
    third = rig.send("y@gmail.test")
    rig.service = b
    rig.run_jobs([QueueJob(message_id=second), QueueJob(message_id=third)])
    assert gmail.connections == 1
    for mid in (second, third):
        r = rig.rcpt(mid)
        # Due when it ends, plus jitter (the rig's rng: 0.5 of a tenth of the wait).
        assert (r["state"], r.get("attempts") or [], r["next_attempt_at"]) == ("deferred", [], until + 0.2), r
    assert b_counts["Suspended"] == 2 and "Throttled" not in b_counts
    # One job per message, delayed (SQS: at most 15 minutes; a longer wait hops), no loop.
    jobs = {job.message_id: (job, delay) for job, delay in rig.queue.sent if job.token is not None}
    assert {m: round(d) for m, (_, d) in jobs.items()} == {first: 4, second: 4, third: 4}

    # After the suspension every recipient is delivered, each attempt counted once.
    rig.clock.advance(4.5)
    rig.run_jobs([job for job, _ in jobs.values()])
    assert [r["state"] for r in rig.rcpts(first)] == ["delivered"] * 3
    assert [len(r["attempts"]) for r in rig.rcpts(first)] == [2, 1, 1]
    assert [(rig.rcpt(m)["state"], len(rig.rcpt(m)["attempts"])) for m in (second, third)] == [("delivered", 1)] * 2
    assert "waiting" not in rig.rcpt(first)
    got = sorted(a for m in mx.wait_for(4) for a in m.rcpt_tos)
    assert got == ["u1@gmail.test", "u2@gmail.test", "v@googlemail.test", "y@gmail.test"]
    # Resumed on one connection (the ramp's cap right after the suspension), one at a time.
    assert gmail.most_at_once == 1


def test_two_containers_throttled_at_once_raise_the_level_once(rig: Rig) -> None:
    pol = Policy()  # the default schedule: Yahoo's 2-hour minimum whole
    ip, now = "203.0.113.12", rig.clock()
    first = next_suspension(None, ip, "yahoo", "yahoo", "421 4.7.0 [TSS04]", now, pol)
    assert first is not None and rig.store.suspend(first, replaces=None, forget_at=forget_at(first, pol))
    assert not rig.store.suspend(first, replaces=None, forget_at=forget_at(first, pol))  # exists already
    # Both containers read level 1 after it ended and are throttled again at the same moment.
    later = first.until + 60
    read = rig.store.suspension(ip, "yahoo")
    assert read == first
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def throttled(reply: str) -> None:
        new = next_suspension(read, ip, "yahoo", "yahoo", reply, later, pol)
        assert new is not None
        barrier.wait()
        results.append(rig.store.suspend(new, replaces=read, forget_at=forget_at(new, pol)))

    threads = [threading.Thread(target=throttled, args=(f"421 4.7.0 [TSS04] container {i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    stored = rig.store.suspension(ip, "yahoo")
    assert isinstance(stored, Suspension) and stored.level == 2 and stored.until == later + 7200
