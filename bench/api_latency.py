"""Benchmark: the send API's warm latency through the local stack, and the handler's own share.

Starts the embedded local stack (moto, the local API Gateway, the template's handler) on
127.0.11.x, warms the function up, then sends N requests of each kind over one keep-alive HTTP
connection and prints, per kind:
  wall     HTTP request -> response through the local API Gateway (median, p99)
  handler  time inside lambda_handler
  dynamodb / sqs / s3   time inside boto3 calls to each (moto on loopback here; real AWS
           from Lambda in the same region is typically 3-8 ms per DynamoDB call)
  own      handler - AWS calls: validation, auth, routing, serialisation: Outpost's share
and the API function's cold-start import time (fresh interpreter; no X-Ray SDK imported).
Anchors (issue 5): SendGrid's public median API latency is 22 ms, Postmark's 33 ms.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/api_latency.py [-n 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class AwsTimer:
    """Per-thread time spent in boto3 calls, by service (botocore's before/after-call events)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def attach(self, client: Any, service: str) -> None:
        def before(**_: Any) -> None:
            self.local.start = time.perf_counter()

        def after(**_: Any) -> None:
            spent = self.local.__dict__.setdefault("spent", defaultdict(float))
            spent[service] += time.perf_counter() - self.local.start
            self.local.__dict__.setdefault("calls", defaultdict(int))[service] += 1

        client.meta.events.register("before-call.*.*", before)
        client.meta.events.register("after-call.*.*", after)

    def reset(self) -> None:
        self.local.spent = defaultdict(float)
        self.local.calls = defaultdict(int)


def cold_import(env: dict[str, str]) -> tuple[float, bool]:
    code = ("import sys, time; sys.path.insert(0, 'functions/send_api'); t = time.perf_counter(); "
            "import app; dt = time.perf_counter() - t; "
            "print(dt, any(m.startswith('aws_xray_sdk') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    os.environ.update(OUTPOST_API_RATE="100000", OUTPOST_API_BURST="100000")

    from outpost_local.stack import SENDING_DOMAIN, LocalStack, StackConfig

    with LocalStack(StackConfig(ip_prefix="127.0.11", api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                smtp_port=0, postfix=False)) as stack:
        for poller in stack.pollers.values():  # measure the API alone: no deliveries competing
            poller.stop()
        from outpost import bootstrap

        timer = AwsTimer()
        for svc in ("dynamodb", "sqs", "s3"):
            timer.attach(bootstrap.aws(svc), svc)
        fn = stack.functions["SendApiFunction"]
        handler_times: list[float] = []
        aws_times: list[dict[str, float]] = []
        calls: list[dict[str, int]] = []
        real_invoke = fn.invoke

        def timed_invoke(event: dict) -> Any:
            timer.reset()
            t = time.perf_counter()
            res = real_invoke(event)
            handler_times.append(time.perf_counter() - t)
            aws_times.append(dict(timer.local.spent))
            calls.append(dict(timer.local.calls))
            return res

        fn.invoke = timed_invoke  # type: ignore[method-assign]
        conn = http.client.HTTPConnection(stack.api.host, stack.api.port)
        auth = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}

        def request(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=auth)
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")

        send_body = {"from": f"Bench <bench@{SENDING_DOMAIN}>", "to": ["alice@accept.test"],
                     "subject": "Your receipt", "text": "Thanks for your order.\n" * 20,
                     "html": "<p>Thanks for your order.</p>" * 20, "tags": {"kind": "receipt"}}
        status, sent = request("POST", "/v1/messages", send_body)
        assert status == 202, sent
        kinds = {
            "POST /v1/messages": lambda i: request("POST", "/v1/messages", send_body),
            "GET /v1/messages/{id}": lambda i: request("GET", f"/v1/messages/{sent['id']}"),
            "GET /v1/messages?recipient=": lambda i: request(
                "GET", "/v1/messages?recipient=alice@accept.test&limit=20"),
        }
        for run in kinds.values():  # warm-up
            for i in range(20):
                run(i)
        print(f"warm latency through the local stack, n={args.n} per kind (ms)")
        print(f"{'request':<30}{'wall p50':>9}{'p99':>8}{'handler p50':>13}{'p99':>8}"
              f"{'dynamodb':>10}{'sqs':>7}{'own p50':>9}{'p99':>8}  calls")
        for name, run in kinds.items():
            handler_times.clear(), aws_times.clear(), calls.clear()
            wall = []
            for i in range(args.n):
                t = time.perf_counter()
                status, _ = run(i)
                wall.append(time.perf_counter() - t)
                assert status in (200, 202), status
            own = [h - sum(a.values()) for h, a in zip(handler_times, aws_times, strict=True)]
            ddb = [a.get("dynamodb", 0.0) for a in aws_times]
            sqs = [a.get("sqs", 0.0) for a in aws_times]
            ms = 1000
            per_call = {k: v for k, v in calls[-1].items()}
            print(f"{name:<30}{statistics.median(wall) * ms:>9.2f}{pct(wall, 99) * ms:>8.2f}"
                  f"{statistics.median(handler_times) * ms:>13.2f}{pct(handler_times, 99) * ms:>8.2f}"
                  f"{statistics.median(ddb) * ms:>10.2f}{statistics.median(sqs) * ms:>7.2f}"
                  f"{statistics.median(own) * ms:>9.2f}{pct(own, 99) * ms:>8.2f}  {per_call}")
        conn.close()
        env = dict(os.environ, **stack.env, PYTHONPATH=f"{ROOT / 'layers/outpost'}:{ROOT / 'local'}")
        cold = [cold_import(env) for _ in range(3)]
        print(f"cold start: importing functions/send_api/app.py (and building the app) "
              f"{min(c[0] for c in cold) * 1000:.0f} ms (best of 3); X-Ray SDK imported: {cold[0][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
