"""Benchmark: head-of-line blocking. Does a slow receiving domain hold up everyone else's mail?

The embedded local stack (real API, DynamoDB Local, SQS, DNS, test CA) with `--senders`
concurrent sender 'containers' running the real DeliveryService with its real timeouts and a
300 s Lambda timeout (outpost_local.chaos.ChaosPoller with no faults). Healthy MX hosts accept
at once; slow ones wait `--slow-seconds` before some replies, by `--slow-shape`:
  open  every reply, the greeting included (slow to open a session);
  rcpt  greeting, EHLO, STARTTLS and MAIL at once, then RCPT, DATA, the final reply and RSET
        slowly (a tarpit or a recipient callout, then a slow content scan);
  data  everything at once but DATA's 354 and the final reply (a slow content scan).
One run with 0% slow-domain recipients, one with `--slow-percent` (default 6%); for each: the
healthy recipients' throughput (healthy recipients / time until the last one was accepted by its
MX) and their latency (MX acceptance - API submission): median and p95; how many slow-domain
recipients were delivered by the end of the wait; and how many recipients any MX accepted more
than once (duplicates: must be 0, there are no faults).

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/head_of_line.py [--recipients 600]
     [--slow-shape open|rcpt|data]
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import statistics
import sys
import threading
import time
from typing import Any

from outpost_local.chaos import SENDER, ChaosMx, ChaosPoller, Faults, _http

HEALTHY = [f"h{i}.hol.test" for i in range(6)]
SLOW = [f"s{i}.hol.test" for i in range(2)]


SHAPES = {
    "open": None,  # every reply
    "rcpt": frozenset({"RCPT", "DATA", "END_OF_DATA", "RSET"}),
    "data": frozenset({"DATA", "END_OF_DATA"}),
}


class SlowMx(ChaosMx):
    """The replies at `stages` (None: every reply, the greeting included) after `stall` seconds."""

    def __init__(self, stall: float, stages: frozenset[str] | None) -> None:
        super().__init__("ok", stall=stall)
        self.stages = stages

    async def before_reply(self, stage: str, server: Any) -> None:
        import asyncio

        if self.stages is None or stage in self.stages:
            await asyncio.sleep(self.stall)


def measure(recipients: int, slow_percent: float, senders: int, slow_seconds: float, ip_prefix: str,
            wait: float, shape: str = "open") -> dict:
    import boto3

    from outpost_local.stack import LocalStack, StackConfig

    rng = random.Random(6)
    st = LocalStack(StackConfig(ip_prefix=ip_prefix, api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                smtp_port=0, postfix=False, schedule_interval=60.0))
    import os

    os.environ.update({"OUTPOST_API_RATE": "100000", "OUTPOST_API_BURST": "100000"})
    pollers: list[ChaosPoller] = []
    try:
        st.start()
        for name in ("outpost", "outpost.sender", "outpost_local"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        st.poller.stop()
        healthy_mx: list[ChaosMx] = []
        for n, d in enumerate(HEALTHY, start=20):
            b = ChaosMx("ok")
            st._add_mx(d, n, "healthy", b)
            healthy_mx.append(b)
        for n, d in enumerate(SLOW, start=40):
            st._add_mx(d, n, "slow", SlowMx(slow_seconds, SHAPES[shape]))
        faults = Faults(random.Random(0), p_kill=0, kill_until=0, p_dup=0, p_undeleted=0, p_write_fail=0)
        sqs = boto3.client("sqs")
        url, arn = st.stack.physical["SendQueue"], st.stack.attributes[("SendQueue", "Arn")]
        for i in range(senders):
            pollers.append(ChaosPoller(i, sqs, url, arn, faults, timeout=300.0, redeliver_after=30,
                                       compress_timeouts=False))
        for p in pollers:
            p.start()
        submitted: dict[str, float] = {}
        slow_addresses: set[str] = set()
        bodies = []
        for i in range(recipients):
            slow = rng.random() * 100 < slow_percent
            domain = rng.choice(SLOW if slow else HEALTHY)
            address = f"r{i}@{domain}"
            if not slow:
                submitted[address] = 0.0
            else:
                slow_addresses.add(address)
            bodies.append({"from": f"Shop <{SENDER}>", "to": [address], "subject": f"Receipt {i}",
                           "text": f"Thanks for order {i}."})
        t0 = time.time()
        for start in range(0, len(bodies), 50):
            chunk = bodies[start:start + 50]
            status, res = _http(st.api.url, st.api_key, "POST", "/v1/messages/batch", {"messages": chunk})
            assert status == 200 and res["accepted"] == len(chunk), (status, res)
            now = time.time()
            for b in chunk:
                if b["to"][0] in submitted:
                    submitted[b["to"][0]] = now
        accepted: dict[str, float] = {}
        copies: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            accepted = {}
            for b, server in zip(healthy_mx, [st.mx[d].server for d in HEALTHY], strict=True):
                for rec in list(server.received):
                    for r in rec.rcpt_tos:
                        accepted.setdefault(r.lower(), b.accepted_at.get(rec.queue_id, time.time()))
            copies = collections.Counter(r.lower() for d in HEALTHY + SLOW for rec in list(st.mx[d].server.received)
                                         for r in rec.rcpt_tos)
            slow_done = sum(1 for a in slow_addresses if copies[a])
            if len(accepted) >= len(submitted) and slow_done >= len(slow_addresses):
                break
            time.sleep(0.5)
        lat = sorted(accepted[a] - submitted[a] for a in submitted if a in accepted)
        last = max(accepted.values()) if accepted else time.time()
        return {"recipients": recipients, "healthy": len(submitted), "slow": recipients - len(submitted),
                "healthy_delivered": len(lat), "throughput": len(lat) / max(1e-9, last - t0),
                "slow_delivered": sum(1 for a in slow_addresses if copies[a]),
                "duplicates": sum(1 for n in copies.values() if n > 1),
                "elapsed": time.time() - t0,
                "median": statistics.median(lat) if lat else float("nan"),
                "p95": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")}
    finally:
        stop = [threading.Thread(target=p.stop) for p in pollers]
        for t in stop:
            t.start()
        for t in stop:
            t.join(5)
        st.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=600)
    ap.add_argument("--slow-percent", type=float, default=6.0)
    ap.add_argument("--slow-seconds", type=float, default=5.0, help="the slow MX's delay before each slow reply")
    ap.add_argument("--slow-shape", choices=sorted(SHAPES), default="open",
                    help="which replies are slow: open (all), rcpt (RCPT on), data (DATA and the final reply)")
    ap.add_argument("--senders", type=int, default=5)
    ap.add_argument("--wait", type=float, default=600.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    which = "every reply" if SHAPES[args.slow_shape] is None else ", ".join(sorted(SHAPES[args.slow_shape] or ()))
    print(f"{args.recipients} recipients (one per message), {args.senders} concurrent senders, slow MX "
          f"({args.slow_shape}): {args.slow_seconds} s before {which}")
    for pct, prefix in ((0.0, "127.0.13"), (args.slow_percent, "127.0.14")):
        r = measure(args.recipients, pct, args.senders, args.slow_seconds, prefix, args.wait, args.slow_shape)
        print(f"slow-domain recipients {pct:4.1f}% ({r['slow']}): healthy {r['healthy_delivered']}/{r['healthy']} "
              f"delivered, {r['throughput']:.1f} recipients/s, latency median {r['median']:.2f} s, "
              f"p95 {r['p95']:.2f} s; slow {r['slow_delivered']}/{r['slow']} delivered; "
              f"{r['duplicates']} delivered twice; {r['elapsed']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
