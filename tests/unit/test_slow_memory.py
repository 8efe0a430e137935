"""The slow-domain memory is shared through the store (issue 8, "a slow domain must not hold up
mail to other domains"): two sender containers (two DeliveryService instances) over one
in-memory store (tests/fakes/store.py) and their own in-memory SMTP peers
(tests/fakes/transport.py). When one container finds a domain slow, another sends new mail for
it straight to the slow lane without connecting; it asks the store at most once per domain per
SLOW_RECHECK; a store read that fails counts as "not slow" and never blocks delivery. The same
against DynamoDB Local and real SMTP servers: tests/integration/test_sender_slow_lane.py.
"""

from __future__ import annotations

from typing import Any

from outpost.api.service import SendService
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import Timeouts
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.transport import FakeConnector, FakeSession, Peer

SENDER = "shop.test"
SLOW, FINE = "slow.test", "fine.test"
IPS = {SLOW: "192.0.2.9", FINE: "192.0.2.1"}
TIMEOUTS = Timeouts(connect=1.0, command=1.0, end_of_data=5.0, end_of_data_min=2.0)
SLOW_OPEN = 0.1  # the new-mail lane's limit here; the slow peer greets after 0.3 s


class FakeSigner:
    def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=unit; b=fake\r\n"


class CountingConnector(FakeConnector):
    """Notes every session it is asked to open (FakeConnector.opened has only those that did)."""

    tried: list[str]

    async def open(self, mx_name: str, ip: str, *args: Any, **kwargs: Any) -> FakeSession:
        self.tried = [*getattr(self, "tried", []), mx_name]
        return await super().open(mx_name, ip, *args, **kwargs)


class Container:
    """One sender container: its own DeliveryService, SMTP peers and queue; the store and the
    clock are shared with the other containers."""

    def __init__(self, store: FakeMessages, clock: FakeClock) -> None:
        self.store, self.clock, self.jobs = store, clock, FakeJobs()
        self.peers = {SLOW: Peer(delays={"CONNECT": 0.3}), FINE: Peer()}
        self.connector = CountingConnector({IPS[d]: p for d, p in self.peers.items()}, timeouts=TIMEOUTS)
        self.counts: dict[str, int] = {}
        self.service = DeliveryService(
            settings=Settings.from_env({}), store=store, suppressions=FakeSuppressions(), queue=self.jobs,
            resolve_mx=lambda domain: [MxHost(f"mx.{domain}", 10, (IPS[domain],))],
            connector=self.connector, signer_for=lambda domain: FakeSigner(),
            return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}", clock=clock,
            rng=lambda: 0.25, count=self.count)
        self.service.SLOW_OPEN = SLOW_OPEN

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def run(self, *mids: str) -> None:
        """One SQS batch of the API's (new-mail) jobs for `mids`."""
        event = {"Records": [{"messageId": f"sqs-{i}", "body": QueueJob(message_id=m).model_dump_json()}
                             for i, m in enumerate(mids)]}
        out = self.service.handle_sqs_event(event, lambda: 305_000)
        assert out["batchItemFailures"] == []

    def handed_to_slow_lane(self) -> list[str]:
        return [job.message_id for job, delay in self.jobs.sent if job.slow and job.token is None and delay == 0]


class World:
    def __init__(self) -> None:
        self.clock, self.store = FakeClock(), FakeMessages()
        self.api = SendService(store=self.store, suppressions=FakeSuppressions(), queue=FakeJobs(),
                               domains=FakeDomains(SENDER), clock=self.clock)

    def send(self, to: str) -> str:
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": [to], "subject": "Hi",
                                          "text": "Hello."})
        return str(self.api.send_one(req)["id"])

    def state(self, mid: str) -> RecipientState:
        stored = self.store.load(mid)
        assert stored is not None
        return stored.recipients[0].state


def test_a_domain_one_container_found_slow_goes_straight_to_the_slow_lane_in_another() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    first = w.send(f"u1@{SLOW}")
    a.run(first)
    # A paid SLOW_OPEN to find out, handed the recipient off, and told the store until when.
    assert a.connector.tried == [f"mx.{SLOW}"] and a.connector.opened == []  # never opened in time
    assert a.handed_to_slow_lane() == [first] and w.state(first) is RecipientState.QUEUED
    assert w.store.slow == {SLOW: w.clock() + a.service.SLOW_MEMORY}

    second, third, fine = w.send(f"u2@{SLOW}"), w.send(f"u3@{SLOW}"), w.send(f"f@{FINE}")
    b.run(second, fine)
    # B never connects to the slow domain: the store told it, before its first transaction.
    assert b.connector.tried == [f"mx.{FINE}"] and b.peers[SLOW].log == []
    assert b.handed_to_slow_lane() == [second] and w.state(second) is RecipientState.QUEUED
    assert w.state(fine) is RecipientState.DELIVERED
    assert b.counts.get("SlowLaneHandoff") == 1 and "SlowDomainReadFailed" not in b.counts
    # The answer is kept: the next new mail for it costs B no store read.
    reads = len(w.store.slow_reads)
    b.run(third)
    assert len(w.store.slow_reads) == reads and b.handed_to_slow_lane() == [second, third]
    assert b.connector.tried == [f"mx.{FINE}"]


def test_a_not_slow_answer_is_kept_for_slow_recheck_then_asked_again() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    b.run(w.send(f"x1@{FINE}"), w.send(f"x2@{FINE}"))  # two jobs of one batch: one read
    b.run(w.send(f"x3@{FINE}"))
    assert w.store.slow_reads == [FINE]
    w.clock.advance(b.service.SLOW_RECHECK + 1)
    b.run(w.send(f"x4@{FINE}"))
    assert w.store.slow_reads == [FINE, FINE]
    assert len(b.peers[FINE].accepted) == 4
    # A found slow.test slow while B's "not slow" answer for it was fresh: B learns it at its
    # next read, SLOW_RECHECK later at most.
    b.peers[SLOW].delays.clear()
    b.run(w.send(f"y1@{SLOW}"))
    assert len(b.peers[SLOW].accepted) == 1
    a.run(w.send(f"y2@{SLOW}"))
    assert SLOW in w.store.slow
    w.clock.advance(b.service.SLOW_RECHECK + 1)
    late = w.send(f"y3@{SLOW}")
    b.run(late)
    assert len(b.peers[SLOW].accepted) == 1 and b.handed_to_slow_lane() == [late]


def test_a_failed_store_read_counts_as_not_slow_and_never_blocks_delivery() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    a.run(w.send(f"u1@{SLOW}"))
    assert SLOW in w.store.slow
    w.store.fail_slow_reads = True
    b.peers[SLOW].delays.clear()  # healthy as seen from B (or slow only for a while)
    mids = [w.send(f"v{i}@{d}") for i, d in enumerate((SLOW, FINE))]
    b.run(*mids)
    assert [w.state(m) for m in mids] == [RecipientState.DELIVERED] * 2
    assert b.handed_to_slow_lane() == [] and len(b.peers[SLOW].accepted) == 1
    assert b.counts.get("SlowDomainReadFailed") == 2  # one per domain, logged, counted


def test_a_mark_expires_with_slow_memory() -> None:
    w = World()
    a, b = Container(w.store, w.clock), Container(w.store, w.clock)
    a.run(w.send(f"u1@{SLOW}"))
    w.clock.advance(a.service.SLOW_MEMORY + 1)
    b.peers[SLOW].delays.clear()
    mid = w.send(f"u2@{SLOW}")
    b.run(mid)
    assert w.state(mid) is RecipientState.DELIVERED and b.handed_to_slow_lane() == []
