"""Benchmark: the sender's cold-start import time, beside boto3 alone.

A Lambda cold start pays for every import the handler module triggers. functions/sender/app.py
imports outpost.bootstrap and outpost.telemetry, then calls delivery_service(), which imports
the delivery service, the SMTP transport (aiosmtplib), the MX resolver (dnspython), DKIM
(dkimpy + cryptography), MTA-STS, the store (boto3) and the VERP helper. This script times,
in fresh interpreters (median of --runs):
  (0) `python -c pass`                      the interpreter itself
  (1) `import boto3`                        the floor every Python Lambda on AWS pays
  (2) `import boto3` + one client created   what any AWS-calling handler pays
  (3) everything the sender imports         the handler's real import set
and lists the slowest top-level imports of (3) from `python -X importtime`.

Run: PYTHONPATH=layers/outpost .venv/bin/python bench/cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SENDER_IMPORTS = (
    "import outpost.bootstrap, outpost.telemetry; "
    "import outpost.delivery.service, outpost.delivery.transport, outpost.mx, outpost.signing, "
    "outpost.tls_policy, outpost.bounces.verp, outpost.store, boto3"
)
PROGRAMS = {
    "(0) interpreter only": "pass",
    "(1) import boto3": "import boto3",
    "(2) import boto3 + sqs client": (
        "import boto3; boto3.session.Session().client('sqs', region_name='us-east-1')"),
    "(3) sender handler's imports": SENDER_IMPORTS,
}


def _time(code: str, runs: int) -> float:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def _importtime(code: str, top: int) -> list[tuple[int, str]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                         capture_output=True, text=True).stderr
    rows = []
    for line in out.splitlines():
        # "import time:  self [us] | cumulative | imported package"; nesting is indentation.
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line[len("import time:"):].split("|", 2)
        if not name[1:].startswith(" "):  # one separator space: a top-level import
            rows.append((int(cum_us), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    _time("pass", 1)  # warm the page cache
    results = {name: _time(code, args.runs) for name, code in PROGRAMS.items()}
    base = results["(0) interpreter only"]
    for name, ms in results.items():
        print(f"{name:34s} {ms:7.0f} ms   (+{ms - base:5.0f} ms over the interpreter)")
    boto = results["(1) import boto3"] - base
    sender = results["(3) sender handler's imports"] - base
    print(f"sender imports / boto3 import = {sender / boto:.2f}x")
    print("slowest top-level imports of (3), cumulative:")
    for us, name in _importtime(SENDER_IMPORTS, 8):
        print(f"  {us / 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
