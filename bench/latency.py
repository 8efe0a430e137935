"""Benchmark: the sender's throughput when every MX host is an internet round trip away (issue 15 item 3).

N one-recipient messages (DKIM-signed with RSA-2048, as the sender signs) to `--domains`
domains, each with its own MX host on a distinct loopback address (127.0.16.x): an aiosmtpd
server (PIPELINING, STARTTLS with the test CA, verified) behind outpost_local.latency_mx's relay,
which delays everything the server sends by `--rtt` ms per round trip (200; 100 and 300 as
options), the greeting and the TLS handshake included. The MX hosts run in a process of their
own. The sender is the real DeliveryService (handle_sqs_event, shaping on as deployed, its
session pool, the memory budget) in this one process, as one Lambda execution environment runs
it: SQS batches of `BatchSize` jobs, one invocation after another. Its store is the in-memory
fake (tests/fakes/store.py) with `--store-ms` (default 6 ms, a DynamoDB request in the same
region) slept in every call, on the thread the call runs on, as a boto3 call blocks.

Printed per run: messages per second per container (messages / the invocations' wall time) and
Lambda GB-seconds per 1,000 messages (that wall time x the sender's MemorySize in template.yaml,
per 1,000), the most sessions open at once on any one MX host, the round trips the MX hosts
answered per message, and this process's CPU time per message (a 1,024 MB Lambda has about
0.6 of a vCPU). Runs, in one go (each its own messages):
  anchor  the sender before issue 15: BatchSize 10, no PIPELINING (the serial dialogue);
  serial  the chosen settings (template.yaml's SendQueue BatchSize) without PIPELINING;
  piped   the chosen settings with PIPELINING: what deploys;
plus, with --sweep, the batch sizes the choice was made from. The anchor runs on
`--anchor-messages` (it is slow by design; a rate does not need the full N).

Measured (2-core machine shared with other work, load 4; h/s15d, 2026-11-30), 200 ms, 1,000
messages: anchor 4.2 msg/s per container, 238.7 GB-s per 1,000; batches of 400 without
PIPELINING 34.6 msg/s, 28.9 GB-s; with it 62.4 msg/s, 16.0 GB-s (3.0 round trips per message,
10.6 for the anchor). 100 ms (800): 8.2 -> 100.0 msg/s; 300 ms (800): 2.9 -> 45.0 msg/s.
Under load 8 the 200 ms run gave 44.8 msg/s (the sender waits for a CPU).

Run: PYTHONPATH=layers/outpost:local:. .venv/bin/python bench/latency.py [--messages 1000]
     [--rtt 200] [--domains 10] [--quick] [--sweep 10,50,100,200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "outpost"), str(ROOT / "local")]

from outpost.api.service import SendService  # noqa: E402
from outpost.config import Settings  # noqa: E402
from outpost.delivery.service import DeliveryService  # noqa: E402
from outpost.delivery.transport import SmtpConnector  # noqa: E402
from outpost.models import QueueJob, SendRequest  # noqa: E402
from outpost.mx import MxHost  # noqa: E402
from outpost.signing import RSA, Signer, generate_key  # noqa: E402
from outpost_local.lifecycle import free_port  # noqa: E402
from tests.fakes.store import FakeDomains, FakeJobs, FakeMessages, FakeSuppressions  # noqa: E402

SENDER = "shop.test"
PREFIX = "127.0.16"
ANCHOR_BATCH = 10  # template.yaml's BatchSize before issue 15


def template_value(name: str, default: int) -> int:
    """A number from template.yaml: the sender's MemorySize, its SendQueue BatchSize."""
    text = (ROOT / "template.yaml").read_text()
    if name == "MemorySize":
        m = re.search(r"SenderFunction:.*?MemorySize: (\d+)", text, re.S)
    else:  # "BatchSize": the SendQueue event source's
        m = re.search(r"Queue: !GetAtt SendQueue\.Arn\n(?:\s+#.*\n)*\s+BatchSize: (\d+)", text)
    return int(m.group(1)) if m else default


class Latent:
    """A store whose every call first sleeps `seconds` (a DynamoDB round trip), on its thread."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self._inner, self._seconds = inner, seconds

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._seconds)
            return value(*args, **kwargs)
        return call


def _mx_process(ips: list[str], port: int, rtt: float, jitter: float, ca_dir: str,
                ready: Any, stop: Any, results: Any) -> None:
    from outpost_local.latency_mx import LatencyMx
    from outpost_local.pki import TestPki

    logging.disable(logging.CRITICAL)
    pki = TestPki(ca_dir)
    servers = [LatencyMx(ip, port, None, pki.server_context(f"mx{k}.lat{k}.test"), f"mx{k}.lat{k}.test",
                         delay=rtt, jitter=jitter, seed=k) for k, ip in enumerate(ips)]
    for s in servers:
        s.start()
    ready.set()
    while not stop.is_set():
        cmd = results.get()
        if cmd == "stop":
            break
        # "counters": flights, accepted and max sessions at once, then reset for the next run.
        out = {"flights": 0, "received": 0, "max_active": 0, "cpu": time.process_time()}
        for s in servers:
            c = s.proxy.counters()
            out["flights"] += c["flights"]
            out["max_active"] = max(out["max_active"], c["max_active"])
            out["received"] += len(s.mx.received)
            s.mx.received.clear()
            with s.proxy._lock:
                s.proxy.flights = 0
                s.proxy.max_active = s.proxy.active
        results.put(out)
    for s in servers:
        s.stop()


def run(name: str, n: int, domains: int, batch: int, pipelining: bool, port: int, ca: str,
        store_ms: float, ask: Callable[[], dict], memory_mb: int) -> dict:
    """One run: n messages in batches of `batch`, one invocation after another."""
    store = FakeMessages()
    api = SendService(store=store, suppressions=FakeSuppressions(), queue=FakeJobs(), domains=FakeDomains(SENDER))
    mids = []
    for i in range(n):
        k = i % domains
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": [f"user{i}@lat{k}.test"],
                                          "subject": f"Receipt {i}", "text": "Thank you for your order.\n" * 20})
        mids.append(str(api.send_one(req)["id"]))
    signer = Signer([generate_key(SENDER, "s1", RSA)])
    latent = Latent(store, store_ms / 1000)
    service = DeliveryService(
        settings=Settings.from_env({}), store=latent, suppressions=Latent(FakeSuppressions(), store_ms / 1000),
        queue=FakeJobs(), slots=latent,  # type: ignore[arg-type]
        resolve_mx=lambda d: [MxHost(f"mx{d[3:-5]}.{d}", 10, (f"{PREFIX}.{10 + int(d[3:-5])}",))],
        connector=SmtpConnector("mta.bench.test", port=port, ca_bundle=ca, pipelining=pipelining),
        signer_for=lambda d: signer, return_path=lambda mid, i: f"b+{mid}.{i}@bounces.{SENDER}")
    mx_cpu = ask()["cpu"]  # (and reset the MX hosts' counters)
    wall, cpu = 0.0, time.process_time()
    for k in range(0, n, batch):
        event = {"Records": [{"messageId": f"m{i}", "body": QueueJob(message_id=mid, attempt=1).model_dump_json()}
                             for i, mid in enumerate(mids[k:k + batch])]}
        t = time.perf_counter()
        out = service.handle_sqs_event(event, lambda: 300_000)
        wall += time.perf_counter() - t
        assert out["batchItemFailures"] == [], out
    cpu = time.process_time() - cpu
    mx = ask()
    delivered = sum(1 for mid in mids for r in store.load(mid).recipients  # type: ignore[union-attr]
                    if r.state.value == "delivered")
    return {"name": name, "n": n, "batch": batch, "pipelining": pipelining, "delivered": delivered,
            "received": mx["received"], "wall": wall, "rate": n / wall,
            "gbs_per_1000": wall * memory_mb / 1024 * 1000 / n, "max_sessions": mx["max_active"],
            "rtts_per_msg": mx["flights"] / n, "cpu_ms": cpu * 1000 / n, "mx_cpu_ms": (mx["cpu"] - mx_cpu) * 1000 / n}


def report(r: dict, anchor: dict | None) -> None:
    vs = f"  x{r['rate'] / anchor['rate']:.1f} the anchor" if anchor and r is not anchor else ""
    print(f"{r['name']:8s} batch {r['batch']:4d} pipelining {'on ' if r['pipelining'] else 'off'} "
          f"{r['n']:5d} msgs ({r['delivered']} delivered, {r['received']} at the MX hosts): "
          f"{r['rate']:6.1f} msg/s per container, {r['gbs_per_1000']:6.1f} GB-s per 1,000, "
          f"{r['rtts_per_msg']:4.1f} round trips per msg, <= {r['max_sessions']} sessions per MX, "
          f"{r['cpu_ms']:4.1f} ms CPU per msg (the MX hosts' {r['mx_cpu_ms']:4.1f}){vs}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--anchor-messages", type=int, default=200)
    ap.add_argument("--rtt", type=int, default=200, choices=(100, 200, 300), help="round trip, ms")
    ap.add_argument("--jitter", type=int, default=0, help="± ms per round trip")
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--store-ms", type=float, default=6.0)
    ap.add_argument("--quick", action="store_true", help="200 messages, anchor 60")
    ap.add_argument("--sweep", default="", help="also these batch sizes, pipelined (e.g. 10,50,100,200)")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.anchor_messages = 200, 60
    logging.disable(logging.CRITICAL)
    memory_mb = template_value("MemorySize", 1024)
    batch = template_value("BatchSize", 10)
    print(f"{args.domains} domains, MX round trip {args.rtt} ms ± {args.jitter}, store call {args.store_ms} ms, "
          f"MemorySize {memory_mb} MB, BatchSize {batch}, {os.cpu_count()} cores "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    ips = [f"{PREFIX}.{10 + k}" for k in range(args.domains)]
    port = free_port(ips[0])
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        ready, stop, q_in, q_out = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()

        def ask() -> dict:
            q_in.put("counters")
            return q_out.get(timeout=60)

        proc = ctx.Process(target=_mx_proxy, args=(ips, port, args.rtt / 1000, args.jitter / 1000, tmp,
                                                   ready, stop, q_in, q_out), daemon=True)
        proc.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the MX hosts did not start")
            ca = str(Path(tmp) / "ca.pem")
            common = dict(domains=args.domains, port=port, ca=ca, store_ms=args.store_ms, ask=ask,
                          memory_mb=memory_mb)
            anchor = run("anchor", args.anchor_messages, batch=ANCHOR_BATCH, pipelining=False, **common)
            report(anchor, None)
            for b in (int(x) for x in args.sweep.split(",") if x):
                report(run("sweep", args.messages, batch=b, pipelining=True, **common), anchor)
            report(run("serial", args.messages, batch=batch, pipelining=False, **common), anchor)
            piped = run("piped", args.messages, batch=batch, pipelining=True, **common)
            report(piped, anchor)
            print(f"goal (>= 50 msg/s per container at 200 ms): {piped['rate']:.1f} msg/s at {args.rtt} ms, "
                  f"{'met' if piped['rate'] >= 50 else 'NOT met'}")
        finally:
            q_in.put("stop")
            stop.set()
            proc.join(15)


def _mx_proxy(ips: list[str], port: int, rtt: float, jitter: float, ca_dir: str, ready: Any, stop: Any,
              q_in: Any, q_out: Any) -> None:
    """The MX process: commands on q_in, answers on q_out (see _mx_process)."""
    class Both:
        def get(self) -> Any:
            return q_in.get()

        def put(self, v: Any) -> None:
            q_out.put(v)

    _mx_process(ips, port, rtt, jitter, ca_dir, ready, stop, Both())


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
