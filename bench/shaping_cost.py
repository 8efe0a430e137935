"""Benchmark: what fleet-wide shaping (issue 11, delivery/shaping.py) costs in DynamoDB requests.

The issue's bar: at most ONE extra DynamoDB request per message on average. The sender
(DeliveryService, the real MessageStore on DynamoDB Local, moto for S3/SQS, a real DNS server,
an aiosmtpd MX on loopback) delivers N one-recipient messages to one provider, in SQS batches
of 10 (template.yaml's BatchSize), one batch after another as one container does. A botocore
hook (`before-call.dynamodb`) counts every DynamoDB request the sender's client makes, per
operation. Three runs, the same messages each:
  (a) OUTPOST_SHAPING_ENABLED=false: the pre-issue-11 sender (the baseline);
  (b) shaping on, the default limits (connection slots and messages per connection only);
  (c) shaping on with per_minute, per_hour and the warm-up's daily cap all set (large enough
      never to make anyone wait): every session also takes its messages in blocks.
Printed per run: DynamoDB requests per message, and the extra over (a).

Then what waiting for room costs (the review of issue 11, s11a item 1), on a simulated clock
(the sender's clock, its claims, leases and windows all follow it; each job it queues is run
when due, by a driver instead of SQS, so the simulated minutes take seconds): `--waiters` W
one-recipient messages, all due at once,
  (w1) to a provider whose one connection slot another sender holds for --hold seconds;
  (w2) --backlog of them to a provider that takes --rate messages a minute;
each under the policy before the review (every slot wait 5-30 s, every rate wait to the
window's end) and the growing waits (shaping.slot_wait, shaping.window_spread). Printed: jobs
re-queued and DynamoDB requests per delivered message, seconds from room coming back to the
first and the last delivery, attempts counted.

Measured (2-core machine shared with other work; DynamoDB Local 1.25.1), on h/s11a, 2026-11-30:
  (a) 4.01 DynamoDB requests per message, (b) 4.43 (+0.42), (c) 4.41 (+0.40): the same as
  before the review (one container: the per-site pool changes nothing for one domain).
  (w1) 30 messages, the one slot held 600 s: before the review 34.1 re-queues and 245.5
  DynamoDB requests per delivered message, all delivered within 24 s of the slot coming back;
  growing waits 10.4 re-queues, 79.6 requests, within 97 s (first 2 s). 30 attempts, no wait
  counted as one.
  (w2) 100 messages at 10 a minute: before 4.5 re-queues, 39.3 requests per message, drained
  503-515 s after the start; growing waits (WINDOW_SPREAD 120 s) 3.5 and 31.9, drained in
  605-651 s (two runs; the second after store_calls.py's queue: the same counts).

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/shaping_cost.py [--messages 300] [--waiters 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from outpost.api.service import SendService
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import SmtpConnector
from outpost.models import QueueJob, SendRequest
from outpost.mx import MxResolver
from outpost.records import Domain
from outpost.signing import RSA, Signer, generate_key
from outpost.store import DomainStore, JobQueue, MessageStore, SuppressionStore
from outpost_local.aws import LocalAws
from outpost_local.dns import DnsServer
from outpost_local.lifecycle import free_port
from outpost_local.mx import MxServer
from outpost_local.provision import provision

HUB, MX_IP = "127.0.5.211", "127.0.5.212"
SENDER = "bench.test"
BATCH = 10  # template.yaml: the sender's SQS BatchSize


class Counter:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


def run(aws: LocalAws, env: dict[str, str], resolver: MxResolver, port: int, signer: Signer, n: int,
        extra: dict[str, str], domain: str) -> tuple[int, collections.Counter[str], float]:
    settings = Settings.from_env({**env, **extra})
    ddb = aws.client("dynamodb")  # a client of its own: only the sender's requests are counted
    store = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
    suppressions = SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"])
    queue = JobQueue(aws.client("sqs"), env["OUTPOST_SEND_QUEUE_URL"])
    api_ddb = aws.client("dynamodb")
    api_store = MessageStore(api_ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
    api = SendService(store=api_store,
                      suppressions=SuppressionStore(api_ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]), queue=queue,
                      domains=DomainStore(api_ddb, env["OUTPOST_DOMAINS_TABLE"]))
    mids = []
    for i in range(n):
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": [f"user{i}@{domain}"],
                                          "subject": f"Receipt {i}", "text": "Thank you for your order.\n"})
        mids.append(str(api.send_one(req)["id"]))
    service = DeliveryService(
        settings=settings, store=store, suppressions=suppressions, queue=queue, resolve_mx=resolver.resolve,
        connector=SmtpConnector("mta.bench.test", port=port), signer_for=lambda d: signer if d == SENDER else None,
        return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}", slots=store)
    counter = Counter()
    ddb.meta.events.register("before-call.dynamodb", counter)
    started = time.perf_counter()
    for k in range(0, n, BATCH):
        event = {"Records": [{"messageId": f"m{i}", "body": QueueJob(message_id=mid, attempt=1).model_dump_json()}
                             for i, mid in enumerate(mids[k:k + BATCH])]}
        out = service.handle_sqs_event(event, lambda: 300_000)
        assert out["batchItemFailures"] == [], out
    elapsed = time.perf_counter() - started
    ddb.meta.events.unregister("before-call.dynamodb", counter)
    delivered = sum(1 for mid in mids for r in (store.load(mid).recipients if store.load(mid) else [])
                    if r.state.value == "delivered")
    return delivered, counter.calls, elapsed


class SimClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class DrivenQueue(JobQueue):
    """The jobs the sender queues, kept for the driver (which runs each when due) instead of SQS."""

    def __init__(self) -> None:
        self.sent: list[tuple[QueueJob, float]] = []

    def send(self, job: QueueJob, delay: float = 0) -> None:
        self.sent.append((job, delay))


def waiters(aws: LocalAws, env: dict[str, str], resolver: MxResolver, port: int, signer: Signer, n: int,
            domain: str, provider: str, *, hold: float = 0.0, rate: int | None = None,
            before: bool = False) -> dict[str, float]:
    """W messages waiting for room (see the module docstring); `before`: the review's policy."""
    import heapq
    import random

    from outpost.delivery import shaping

    saved = shaping.SLOT_WAIT_GROWTH, shaping.WINDOW_SPREAD
    if before:
        shaping.SLOT_WAIT_GROWTH, shaping.WINDOW_SPREAD = 1, 0.0
    limits = {"connections": 1} if rate is None else {"per_minute": rate}
    settings = Settings.from_env({**env, "OUTPOST_SENDER_IP": f"192.0.2.{int(before) + (2 if rate else 0) + 40}",
                                  "OUTPOST_SHAPING": json.dumps({provider: limits})})
    clock, queue, rnd = SimClock(), DrivenQueue(), random.Random(7)
    ddb = aws.client("dynamodb")
    store = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
    api = SendService(store=MessageStore(aws.client("dynamodb"), env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"),
                                         env["OUTPOST_BUCKET"]),
                      suppressions=SuppressionStore(aws.client("dynamodb"), env["OUTPOST_SUPPRESSIONS_TABLE"]),
                      queue=queue, domains=DomainStore(aws.client("dynamodb"), env["OUTPOST_DOMAINS_TABLE"]),
                      clock=clock)
    mids = [str(api.send_one(SendRequest.model_validate({
        "from": f"Shop <news@{SENDER}>", "to": [f"user{i}@{domain}"], "subject": f"Receipt {i}",
        "text": "Thank you for your order.\n"}))["id"]) for i in range(n)]
    queue.sent.clear()
    service = DeliveryService(
        settings=settings, store=store, suppressions=SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]),
        queue=queue, resolve_mx=resolver.resolve, connector=SmtpConnector("mta.bench.test", port=port),
        signer_for=lambda d: signer if d == SENDER else None,
        return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}", slots=store, clock=clock, rng=rnd.random)
    t0 = clock()
    if hold:
        assert store.take_slot(settings.sender_ip or "", provider, "another-sender", t0 + 10 * hold, 1, {}, t0)[0]
    counter = Counter()
    ddb.meta.events.register("before-call.dynamodb", counter)
    heap = [(t0, i, QueueJob(message_id=m, attempt=1)) for i, m in enumerate(mids)]
    delivered: dict[str, float] = {}
    jobs, seq = 0, len(heap)
    try:
        while heap:
            at, _, job = heapq.heappop(heap)
            clock.now = max(clock.now, at)
            if hold and clock.now >= t0 + hold:
                store.release_slot(settings.sender_ip or "", provider, "another-sender", {})
                hold = -hold  # released once
            sent = len(queue.sent)
            event = {"Records": [{"messageId": "m", "body": job.model_dump_json()}]}
            assert service.handle_sqs_event(event, lambda: 300_000)["batchItemFailures"] == []
            jobs += 1
            for again, delay in queue.sent[sent:]:
                seq += 1
                heapq.heappush(heap, (clock.now + delay, seq, again))
            if job.message_id not in delivered:
                stored = store.load(job.message_id)
                if stored is not None and stored.recipients[0].state.value == "delivered":
                    delivered[job.message_id] = clock.now
    finally:
        ddb.meta.events.unregister("before-call.dynamodb", counter)
        shaping.SLOT_WAIT_GROWTH, shaping.WINDOW_SPREAD = saved
    room = t0 + abs(hold)
    attempts = sum(len(r.attempts) for m in mids for r in (store.load(m) or _none()).recipients)
    # (the driver's own store.load above is on the same client: one read per run, not the sender's)
    requests = sum(counter.calls.values()) - jobs
    return {"delivered": len(delivered), "jobs": jobs, "requeues": len(queue.sent) / n,
            "requests": requests / n, "first": min(delivered.values()) - room,
            "last": max(delivered.values()) - room, "attempts": attempts}


def _none() -> Any:
    class Empty:
        recipients: list[Any] = []
    return Empty()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--waiters", type=int, default=30, help="messages waiting for room (0: skip)")
    ap.add_argument("--hold", type=float, default=600.0, help="seconds another sender holds the one slot")
    ap.add_argument("--rate", type=int, default=10, help="messages a minute the rate-limited provider takes")
    ap.add_argument("--backlog", type=int, default=100, help="messages waiting for the rate-limited provider")
    args = ap.parse_args()
    n = args.messages
    aws = LocalAws(HUB)
    aws.start()
    dns = DnsServer(HUB, 0)
    dns.start()
    port = free_port(MX_IP)
    mx = MxServer(MX_IP, port, None, None, hostname="mx.provider.test")
    mx.start()
    try:
        stack = provision(aws, stack_name="shapingcost", parameters={"SendingHostname": "mta.bench.test",
                                                                       "BounceDomain": f"bounces.{SENDER}"})
        env = stack.env()
        domains = DomainStore(aws.client("dynamodb"), env["OUTPOST_DOMAINS_TABLE"])
        domains.put_domain(Domain(domain=SENDER, verified=True))
        signer = Signer([generate_key(SENDER, "s1", RSA)])
        resolver = MxResolver([(HUB, dns.port)], timeout=1.0, allow_private=True)
        dns.add("mx.provider.test", "A", MX_IP)
        # Day 30 of the warm-up (250,000 a day per provider): counted, never reached here.
        day30 = (datetime.now(UTC).date() - timedelta(days=29)).isoformat()
        runs = [
            ("(a) shaping off (baseline)", {"OUTPOST_SHAPING_ENABLED": "false"}),
            ("(b) slots + per connection", {}),
            ("(c) + per_minute, per_hour, warm-up", {
                "OUTPOST_SHAPING": json.dumps({"mx.provider.test": {"per_minute": 100_000, "per_hour": 1_000_000}}),
                "OUTPOST_WARMUP_START": day30}),
        ]
        print(f"engine: {aws.dynamodb_engine} ({aws.dynamodb_engine_reason}); {n} messages, "
              f"one recipient each, batches of {BATCH}, one provider")
        base = None
        for i, (name, extra) in enumerate(runs):
            domain = f"d{i}.provider.test"
            dns.add(domain, "MX", (10, "mx.provider.test"))
            delivered, calls, elapsed = run(aws, env, resolver, port, signer, n, extra, domain)
            per = sum(calls.values()) / n
            base = per if base is None else base
            print(f"{name:40s} delivered {delivered}/{n}  DynamoDB requests/message {per:5.2f}  "
                  f"extra {per - base:+5.2f}  ({dict(sorted(calls.items()))}; {elapsed:.1f} s)")
        if args.waiters:
            print("waiting for room, simulated clock: messages of one recipient each, all due at once")
        for i, (name, w, kw) in enumerate([] if not args.waiters else [
                (f"(w1) {args.waiters}, 1 slot held {args.hold:.0f} s", args.waiters, {"hold": args.hold}),
                (f"(w2) {args.backlog} at {args.rate} a minute", args.backlog, {"rate": args.rate})]):
            for before in (True, False):
                domain = f"w{i}{int(before)}.provider.test"
                dns.add(domain, "MX", (10, "mx.provider.test"))
                f = waiters(aws, env, resolver, port, signer, w, domain, "mx.provider.test", before=before, **kw)
                label = "before (SLOT_WAIT, window end)" if before else "growing waits"
                print(f"{name:30s} {label:31s} delivered {f['delivered']}/{w}  "
                      f"re-queues/msg {f['requeues']:5.1f}  DynamoDB requests/msg {f['requests']:6.1f}  "
                      f"room back -> first {f['first']:4.0f} s, last {f['last']:4.0f} s  attempts {f['attempts']}")
    finally:
        mx.stop()
        dns.stop()
        aws.stop()


if __name__ == "__main__":
    main()
