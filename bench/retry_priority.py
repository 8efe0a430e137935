"""Benchmark: does the retry schedule hold under a backlog of new mail? Without and with RetryQueue.

Two runs of the embedded local stack, the same scenario in each (issue 8, the harness's
finding "retries wait in the same queue as new mail"):
  one POST /v1/messages/batch: K greylisted recipients first (one message each, on an MX that
  answers their first RCPT 451 4.7.1 once the whole batch is queued, and accepts them later),
  then N messages of new mail to an accepting MX. Each greylisted recipient is due again one
  schedule step (--step seconds) after its first attempt.
  (a) without: OUTPOST_RETRY_QUEUE_URL="" (a stack from before: retries go to SendQueue)
  (b) with:    the template's RetryQueue and its own SQS event source (the local stack runs
               one poller per mapping, as Lambda runs one per event source)
Printed per run: each retry's delay after the first attempt against the schedule (how late),
how long the backlog took to drain, and how many new-mail jobs were still queued when the
retries got through. The local stack runs the sender as one container (invocations one at a
time); in AWS several drain the backlog faster, but a backlog larger than they can take in a
schedule step delays retries the same way without a queue of their own.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/retry_priority.py \
         [--backlog 300] [--greylisted 5] [--step 5]
Bounded: at most 499 messages in the batch, each run gives up after --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime
from typing import Any

from outpost_local.mx import Behaviour, MxServer
from outpost_local.stack import SENDING_DOMAIN, LocalStack, StackConfig


class HeldGreylist(Behaviour):
    """451 4.7.1 to each recipient's first RCPT, answered once `release` is set (the whole
    batch is queued, so every retry's job is queued behind the backlog); later RCPTs pass."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.seen: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        if address.lower() in self.seen:
            return None
        self.seen.add(address.lower())
        await asyncio.to_thread(self.release.wait, 60)
        return "451 4.7.1 Greylisted, please retry"


def _post(stack: LocalStack, path: str, body: Any) -> Any:
    req = urllib.request.Request(stack.api.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {stack.api_key}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _queued(sqs: Any, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in a.values())


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run(mode: str, prefix: str, backlog: int, greylisted: int, step: int, timeout: float) -> dict[str, Any]:
    import boto3

    env = {"OUTPOST_RETRY_QUEUE_URL": ""} if mode == "without" else {}
    stack = LocalStack(StackConfig(ip_prefix=prefix, api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                   smtp_port=0, retry_schedule=str(step), postfix=False, env=env))
    stack.start()
    try:
        from outpost.bootstrap import message_store

        release = threading.Event()
        domain, name, ip = "held.test", "mx.held.test", stack.config.ip(30)
        held = MxServer(ip, stack.smtp_port, HeldGreylist(release), stack.pki.server_context(name), hostname=name)
        held.start()
        stack.components.append(held)
        stack.dns.add(domain, "MX", (10, name))
        stack.dns.add(name, "A", ip)
        tag = secrets.token_hex(3)
        body = {"from": f"Shop <shop@{SENDING_DOMAIN}>", "subject": f"Bench {tag}", "text": "Hello."}
        grey = [f"retry{i}-{tag}@{domain}" for i in range(greylisted)]
        messages = [dict(body, to=[a]) for a in grey] + [dict(body, to=[f"bulk{i}-{tag}@accept.test"])
                                                         for i in range(backlog)]
        t0 = time.time()
        res = _post(stack, "/v1/messages/batch", {"messages": messages})
        release.set()
        accepted_in = time.time() - t0
        assert res["accepted"] == len(messages), res
        grey_ids = [r["id"] for r in res["results"][:greylisted]]
        sqs = boto3.client("sqs")
        send_url = stack.env["OUTPOST_SEND_QUEUE_URL"]
        accept = stack.mx["accept.test"].server
        marker = f"Bench {tag}".encode()
        waiting: dict[str, int] = {}
        drained_at = None
        deadline = time.time() + timeout
        while (len(waiting) < greylisted or drained_at is None) and time.time() < deadline:
            now = time.time()
            for r in held.received:
                for a in r.rcpt_tos:
                    if a in grey and a not in waiting:
                        waiting[a] = _queued(sqs, send_url)
            if drained_at is None and sum(1 for r in accept.received if marker in r.data) >= backlog:
                drained_at = now
            time.sleep(0.05)
        late: list[float] = []
        delays: list[float] = []
        first_attempts: list[float] = []
        for mid in grey_ids:
            stored = message_store().load(mid)
            attempts = stored.recipients[0].attempts if stored else ()
            if len(attempts) >= 2:
                first, second = _ts(attempts[0].at), _ts(attempts[1].at)
                first_attempts.append(first)
                delays.append(second - first)
                late.append(second - first - step)
        first_attempt = min(first_attempts) if first_attempts else t0
        return {"mode": mode, "retried": len(delays), "greylisted": greylisted, "backlog": backlog,
                "accepted_in": accepted_in, "delays": delays, "late": late,
                "drain": (drained_at - first_attempt) if drained_at else None,
                "waiting": sorted(waiting.values()), "retry_invocations":
                stack.pollers["SenderFunction.Retry"].invocations}
    finally:
        stack.stop()


def _fmt(r: dict[str, Any], step: int) -> str:
    if not r["delays"]:
        return f"{r['mode']:>8}: no retry got through in time"
    late = r["late"]
    drain = f"{r['drain']:.1f} s" if r["drain"] is not None else "not within the timeout"
    return (f"{r['mode']:>8}: {r['retried']}/{r['greylisted']} retried; retry delay after the first attempt "
            f"median {statistics.median(r['delays']):.1f} s, max {max(r['delays']):.1f} s "
            f"(schedule {step} s: late by median {statistics.median(late):.1f} s, max {max(late):.1f} s); "
            f"backlog of {r['backlog']} drained {drain} after the first attempt; new-mail jobs still "
            f"queued at each retry: {r['waiting']}; Retry-mapping invocations: {r['retry_invocations']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backlog", type=int, default=300)
    ap.add_argument("--greylisted", type=int, default=5)
    ap.add_argument("--step", type=int, default=5, help="the retry schedule's first step, seconds")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    if not 1 <= a.greylisted + a.backlog <= 500:
        ap.error("greylisted + backlog must fit one batch (at most 500)")
    results = [run("without", "127.0.8", a.backlog, a.greylisted, a.step, a.timeout),
               run("with", "127.0.9", a.backlog, a.greylisted, a.step, a.timeout)]
    print(f"retry priority: {a.greylisted} greylisted recipients first in a batch of "
          f"{a.greylisted + a.backlog}, retry schedule step {a.step} s, local stack (one sender container)")
    for r in results:
        print(_fmt(r, a.step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
