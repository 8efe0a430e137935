"""Benchmark: the chaos run (outpost_local.chaos) at a larger, bounded scale.

Messages through the real API of the embedded local stack, misbehaving MX hosts and DNS,
sender invocations killed at chosen points, duplicated and undeleted SQS jobs, failed writes;
prints messages, recipients, kills, duplicate jobs, lost, wrong state, duplicates inside and
outside the documented crash window, the DLQ's depth and the wall time. Exits 1 on a failure.
tests/e2e/test_chaos.py runs it small, in its own process (the stack owns the process's AWS
environment), with --json.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/chaos.py --messages 1500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from outpost_local.chaos import ChaosConfig, run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--senders", type=int, default=5, help="concurrent sender 'containers'")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--kill-probability", type=float, default=0.05, help="per invocation")
    ap.add_argument("--kill-for", type=float, default=40.0, help="seconds during which kills happen")
    ap.add_argument("--kill-every", type=int, default=0, help="also kill every n-th of the first --kill-first")
    ap.add_argument("--kill-first", type=int, default=0, help="invocations (deterministic kills, kinds in turn)")
    ap.add_argument("--lifetime", type=int, default=120, help="OUTPOST_MAX_LIFETIME, seconds")
    ap.add_argument("--wait", type=float, default=900.0, help="the longest wait for every recipient to be final")
    ap.add_argument("--ip-prefix", default="127.0.10")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    cfg = ChaosConfig(messages=args.messages, senders=args.senders, seed=args.seed, ip_prefix=args.ip_prefix,
                      p_kill=args.kill_probability, kill_for=args.kill_for, lifetime=args.lifetime,
                      kill_every=args.kill_every, kill_first=args.kill_first,
                      wait=args.wait)
    figures = run(cfg, say=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        out = {f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)}
        out["kills"], out["states"] = dict(figures.kills), dict(figures.states)
        print(json.dumps(out))
    else:
        for line in figures.lines():
            print(line)
        for p in figures.problems[:30]:
            print("  ", p)
    bad = figures.lost or figures.wrong_state or figures.duplicates_out_of_window or figures.dlq_depth
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
