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

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/shaping_cost.py [--messages 300]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
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
    finally:
        mx.stop()
        dns.stop()
        aws.stop()


if __name__ == "__main__":
    main()
