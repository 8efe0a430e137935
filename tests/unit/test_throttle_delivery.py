"""Issue 11 item 4 with fakes: two sender containers (two DeliveryService instances) over one
in-memory store (tests/fakes/store.py, with its Suspensions) and in-memory SMTP peers. A
throttle reply on one recipient suspends the provider for the sending IP: that recipient is
charged the attempt, the job's other recipients bound for the provider wait with none, other
providers' recipients are delivered, another container does not connect while it lasts, and
after it everything is delivered. The same against DynamoDB Local and real SMTP servers:
tests/integration/test_sender_throttle.py."""

from __future__ import annotations

from typing import Any

from outpost.api.service import QueryService, SendService
from outpost.clock import iso
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import Timeouts
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from outpost.records import Recipient, Waiting
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.transport import FakeConnector, FakeSession, Peer

SENDER = "shop.test"
GMAIL_MX, YAHOO_MX = "gmail-smtp-in.l.google.com", "mta5.am0.yahoodns.net"
MX = {"gmail.test": (GMAIL_MX, "192.0.2.10"), "googlemail.test": (GMAIL_MX, "192.0.2.10"),
      "yahoo.test": (YAHOO_MX, "192.0.2.20"), "other.test": ("mx.other.test", "192.0.2.30")}
THROTTLE = (421, "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
                 "originating from your IP address. Mail sent from your IP address has been "
                 "temporarily rate limited.")
TIMEOUTS = Timeouts(connect=1.0, command=1.0, end_of_data=5.0, end_of_data_min=2.0)
IP = "198.51.100.7"


class FakeSigner:
    def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=unit; b=fake\r\n"


class CountingConnector(FakeConnector):
    """Notes every session it is asked to open (FakeConnector.opened has only those that did)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tried: list[str] = []

    async def open(self, mx_name: str, ip: str, *args: Any, **kwargs: Any) -> FakeSession:
        self.tried.append(mx_name)
        return await super().open(mx_name, ip, *args, **kwargs)


class Container:
    """One sender container: its own DeliveryService, SMTP peers and queue; the store and the
    clock are shared with the other containers."""

    def __init__(self, store: FakeMessages, clock: FakeClock, peers: dict[str, Peer] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.store, self.clock, self.jobs = store, clock, FakeJobs()
        self.peers = peers or {ip: Peer() for _, ip in MX.values()}
        self.connector = CountingConnector(self.peers, timeouts=TIMEOUTS)
        self.counts: dict[str, int] = {}
        self.by_provider: dict[tuple[str, str], int] = {}
        self.service = DeliveryService(
            settings=Settings.from_env({"OUTPOST_SENDER_IP": IP, **(env or {})}), store=store,
            suppressions=FakeSuppressions(),
            queue=self.jobs, resolve_mx=lambda d: [MxHost(MX[d][0], 10, (MX[d][1],))],
            connector=self.connector, signer_for=lambda domain: FakeSigner(),
            return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}", clock=clock,
            rng=lambda: 0.25, count=self.count, suspensions=store, count_by=self.count_by)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def count_by(self, name: str, n: int, dims: Any) -> None:
        key = (name, dims["provider"])
        self.by_provider[key] = self.by_provider.get(key, 0) + n

    def run(self, *mids: str) -> None:
        """One SQS batch of new-mail jobs (the API's, or the sweeper's) for `mids`."""
        event = {"Records": [{"messageId": f"sqs-{i}", "body": QueueJob(message_id=m).model_dump_json()}
                             for i, m in enumerate(mids)]}
        assert self.service.handle_sqs_event(event, lambda: 305_000)["batchItemFailures"] == []


class World:
    def __init__(self) -> None:
        self.clock, self.store = FakeClock(), FakeMessages()
        self.api = SendService(store=self.store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                               domains=FakeDomains(SENDER), clock=self.clock)
        self.queries = QueryService(store=self.store, suppressions=FakeSuppressions(), clock=self.clock)

    def send(self, *to: str) -> str:
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": list(to), "subject": "Hi",
                                          "text": "Hello."})
        return str(self.api.send_one(req)["id"])

    def recipients(self, mid: str) -> list[Recipient]:
        stored = self.store.load(mid)
        assert stored is not None
        return stored.recipients


def test_a_throttle_suspends_the_provider_and_holds_its_other_recipients_without_an_attempt() -> None:
    w = World()
    a = Container(w.store, w.clock)
    gmail = a.peers["192.0.2.10"]
    gmail.replies["RCPT"] = [THROTTLE]
    mid = w.send("u1@gmail.test", "u2@gmail.test", "u3@gmail.test", "x@other.test")
    start = w.clock()
    a.run(mid)

    u1, u2, u3, x = w.recipients(mid)
    until = start + 600  # level 1: 10 minutes, Google's minimum too
    assert x.state is RecipientState.DELIVERED  # another provider's recipient is not held
    assert [r.state for r in (u1, u2, u3)] == [RecipientState.DEFERRED] * 3
    # The throttled one is charged its attempt; the others none, and none of them reached the MX.
    assert [len(r.attempts) for r in (u1, u2, u3)] == [1, 0, 0]
    assert u1.attempts[0].code == 421 and u1.attempts[0].status == "4.7.28"
    assert [entry for entry in gmail.log if entry.startswith("RCPT")] == ["RCPT 421"]
    assert gmail.accepted == []
    # Due when the suspension ends (plus jitter, rng 0.25 of a minute), not at the schedule's step.
    assert [r.next_attempt_at for r in (u1, u2, u3)] == [until + 15] * 3
    assert all(r.waiting == Waiting("suspended", "google", until, f"421 {THROTTLE[1]}") for r in (u1, u2, u3))
    assert u2.last is not None and u2.last["scope"] == "provider" and u2.last["provider"] == "google"
    # Fleet-wide: the store has it, for this sending IP.
    s = w.store.suspensions[(IP, "google")]
    assert (s.level, s.until, s.reply) == (1, until, f"421 {THROTTLE[1]}")
    assert a.counts["Throttled"] == 1 and a.counts["Suspended"] == 2
    assert a.by_provider == {("Throttled", "google"): 1, ("Suspended", "google"): 2}
    # No retry storm: one job, delayed until the end of the suspension.
    assert [(job.message_id, round(delay)) for job, delay in a.jobs.sent] == [(mid, 615)]

    # GET /v1/messages/{id} says why and until when.
    view = w.queries.message(mid)["recipients"]
    assert view[1]["waiting"] == {"reason": "suspended", "provider": "google", "until": iso(until),
                                  "detail": f"421 {THROTTLE[1]}"}
    assert "waiting" not in view[3]

    # Within the same container, another message for the same provider (another domain of
    # Google's) is held without connecting and without a store read.
    reads, seen = len(w.store.suspension_reads), list(gmail.log)
    other = w.send("v@googlemail.test")
    a.run(other)
    assert gmail.log == seen
    assert w.recipients(other)[0].state is RecipientState.DEFERRED
    assert w.recipients(other)[0].attempts == () and len(w.store.suspension_reads) == reads

    # After the suspension: every one delivered, attempts bounded (1 + one each).
    w.clock.advance(616)
    a.run(mid, other)
    assert [r.state for r in w.recipients(mid)] == [RecipientState.DELIVERED] * 4
    assert [len(r.attempts) for r in w.recipients(mid)] == [2, 1, 1, 1]
    assert w.recipients(other)[0].state is RecipientState.DELIVERED
    assert all(r.waiting is None for r in w.recipients(mid))
    assert "waiting" not in w.queries.message(mid)["recipients"][0]


def test_with_shaping_off_a_throttle_reply_is_an_ordinary_deferral_and_nothing_is_suspended() -> None:
    """OUTPOST_SHAPING_ENABLED=false is the sender as before issue 11 (benches, emergencies)."""
    w = World()
    a = Container(w.store, w.clock, env={"OUTPOST_SHAPING_ENABLED": "false"})
    gmail = a.peers["192.0.2.10"]
    gmail.replies["RCPT"] = [THROTTLE]
    mid = w.send("u1@gmail.test", "u2@gmail.test")
    a.run(mid)
    u1, u2 = w.recipients(mid)
    assert (u1.state, len(u1.attempts), u1.waiting) == (RecipientState.DEFERRED, 1, None)
    assert u1.last is not None and u1.last["scope"] != "provider"
    assert u2.state is RecipientState.DELIVERED  # the next recipient still tried: no hold
    assert w.store.suspensions == {} and w.store.suspension_reads == []
    assert "Throttled" not in a.counts and "Suspended" not in a.counts


def test_another_container_does_not_connect_to_a_suspended_provider() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    a.peers["192.0.2.10"].replies["RCPT"] = [THROTTLE]
    a.run(w.send("u1@gmail.test"))
    assert (IP, "google") in w.store.suspensions

    mid = w.send("v1@googlemail.test", "v2@gmail.test", "y@other.test")
    b.run(mid)
    # B asked the store before its first session to Google, and opened none.
    assert b.connector.tried == ["mx.other.test"] and b.peers["192.0.2.10"].log == []
    v1, v2, y = w.recipients(mid)
    assert y.state is RecipientState.DELIVERED
    assert [(r.state, r.attempts) for r in (v1, v2)] == [(RecipientState.DEFERRED, ())] * 2
    assert b.counts["Suspended"] == 2 and "Throttled" not in b.counts
    # The answer is kept: the next job for Google costs B no store read.
    reads = len(w.store.suspension_reads)
    b.run(w.send("v3@gmail.test"))
    assert len(w.store.suspension_reads) == reads and b.connector.tried == ["mx.other.test"]


def test_a_failed_store_read_counts_as_not_suspended_and_never_blocks_delivery() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    a.peers["192.0.2.10"].replies["RCPT"] = [THROTTLE]
    a.run(w.send("u1@gmail.test"))
    w.store.fail_suspension_reads = True
    mid = w.send("v1@gmail.test")
    b.run(mid)
    assert w.recipients(mid)[0].state is RecipientState.DELIVERED
    assert b.counts["SuspensionReadFailed"] == 1


def test_a_not_suspended_answer_is_kept_for_the_recheck_time() -> None:
    w = World()
    b = Container(w.store, w.clock)
    b.run(w.send("v1@gmail.test"), w.send("v2@gmail.test"))  # two jobs of one batch: one read
    b.run(w.send("v3@gmail.test"))
    assert w.store.suspension_reads == ["google"]
    w.clock.advance(b.service.SUSPENSION_RECHECK + 1)
    b.run(w.send("v4@gmail.test"))
    assert w.store.suspension_reads == ["google", "google"]
    assert len(b.peers["192.0.2.10"].accepted) == 4


def test_a_throttle_at_the_greeting_charges_one_recipient_and_uses_the_providers_minimum() -> None:
    w = World()
    a = Container(w.store, w.clock)
    yahoo = a.peers["192.0.2.20"]
    yahoo.replies["CONNECT"] = [(421, "4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to "
                                      "unexpected volume or user complaints")]
    mid = w.send("a@yahoo.test", "b@yahoo.test")
    start = w.clock()
    a.run(mid)
    r1, r2 = w.recipients(mid)
    assert [len(r.attempts) for r in (r1, r2)] == [1, 0]
    assert r1.attempts[0].command == "CONNECT" and r1.attempts[0].code == 421
    assert w.store.suspensions[(IP, "yahoo")].until == start + 7200  # KumoMTA: TSS04, 2 hours
    assert {r.next_attempt_at for r in (r1, r2)} == {start + 7200 + 15}
    assert a.connector.tried == [YAHOO_MX]  # one connection; the second recipient never tried


def test_a_throttle_soon_after_a_suspension_raises_the_level() -> None:
    w = World()
    a = Container(w.store, w.clock)
    a.peers["192.0.2.10"].replies["RCPT"] = [THROTTLE, THROTTLE]
    a.run(w.send("u1@gmail.test"))
    w.clock.advance(700)
    a.run(w.send("u2@gmail.test"))
    s = w.store.suspensions[(IP, "google")]
    assert (s.level, s.until) == (2, w.clock() + 1800)


def test_after_a_suspension_the_provider_gets_one_connection_at_a_time() -> None:
    w = World()
    a = Container(w.store, w.clock)
    a.peers["192.0.2.10"].replies["RCPT"] = [THROTTLE]
    a.run(w.send("u0@gmail.test"))
    w.clock.advance(615)  # the suspension is over; the ramp starts at one connection
    at_once: list[int] = []
    open_ = a.connector.open

    async def counting_open(mx_name: str, ip: str, *args: Any, **kwargs: Any) -> FakeSession:
        at_once.append(1 + sum(1 for s in a.connector.opened if s.is_open and s.mx_name == mx_name))
        return await open_(mx_name, ip, *args, **kwargs)

    a.connector.open = counting_open  # type: ignore[method-assign]
    mids = [w.send(f"v{i}@gmail.test") for i in range(2)] + [w.send("v2@googlemail.test")]
    a.run(*mids)  # three jobs at once, each wanting its own session to Google
    assert [w.recipients(m)[0].state for m in mids] == [RecipientState.DELIVERED] * 3
    assert at_once == [1, 1, 1]
    # Once the ramp has grown past the limit, sessions are pooled again as usual.
    w.clock.advance(5 * 120)
    at_once.clear()
    a.run(*[w.send(f"z{i}@gmail.test") for i in range(3)])
    assert max(at_once) > 1


def test_a_failed_suspension_write_still_holds_the_provider_in_this_container() -> None:
    w = World()
    a = Container(w.store, w.clock)
    a.peers["192.0.2.10"].replies["RCPT"] = [THROTTLE]
    w.store.fail_suspension_writes = True
    mid = w.send("u1@gmail.test", "u2@gmail.test")
    a.run(mid)
    assert [len(r.attempts) for r in w.recipients(mid)] == [1, 0]  # held here all the same
    assert a.counts["SuspensionShareFailed"] == 1 and w.store.suspensions == {}
    later = w.send("u3@gmail.test")
    a.run(later)  # this container remembers it, without the store
    assert w.recipients(later)[0].attempts == () and a.connector.tried == [GMAIL_MX]
