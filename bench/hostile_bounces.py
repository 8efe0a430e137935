"""Hostile inbound mail: parse time and memory per input size, for each hostile shape.

Usage:  .venv/bin/python bench/hostile_bounces.py [SHAPE ...] [--sizes 100000,400000,...]

Each shape (tests/unit/hostile_shapes.py: the inputs issue 8 measured, and more) is parsed
at each size in a fresh process: the best of two timed runs of ``parse_bounce``, beside two
linear peers measured on the same bytes in the same run (``bytes.count(b"\\n")`` and a
SHA-256 of the input: what one plain pass over the input costs), then the peak of memory
traced during one more parse (tracemalloc, the input excluded) and the process's peak RSS
after its largest size (the input included).  Targets (issue 8): under 1 s and 200 MB for
every input from 100 KB to 20 MB.  Growth is linear up to the read limit
(MESSAGE_READ_LIMIT, 512 KiB), flat beyond it.

A second table gives ``judge()`` (the sender's failure policy, which classifies a reply) on
hostile SMTP reply texts of growing size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100_000, 200_000, 400_000, 1_600_000, 5_000_000, 20_000_000)

_RUNNER = r"""
import hashlib, json, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from hostile_shapes import SHAPES
from outpost.bounces import parse_bounce
def peak_rss_mb():
    # VmHWM is this process's own peak (ru_maxrss would include the parent's from before exec).
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
parse_bounce(b"From: a@b\n\nx\n")
rows = []
for size in map(int, sys.argv[3:]):
    raw = SHAPES[sys.argv[2]](size)
    def best(fn):
        b = 1e9
        for _ in range(2):
            t = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t)
        return b
    parse = best(lambda: parse_bounce(raw))
    count = best(lambda: raw.count(b"\n"))
    sha = best(lambda: hashlib.sha256(raw).digest())
    tracemalloc.start()
    report = parse_bounce(raw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.append({"size": len(raw), "parse": parse, "count": count, "sha256": sha,
                 "traced_mb": peak / 2**20, "kind": report.kind,
                 "recipients": len(report.recipients)})
    del raw
print(json.dumps({"rows": rows, "rss_mb": peak_rss_mb()}))
"""

_REPLY_RUNNER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from hostile_shapes import smtp_reply
from outpost.delivery.trouble import SmtpReply, judge
judge(SmtpReply(550, "5.1.1 user unknown", "RCPT"))
out = []
for size in map(int, sys.argv[2:]):
    worst = 0.0
    for text in smtp_reply(size):
        b = 1e9
        for _ in range(2):
            t = time.perf_counter(); judge(SmtpReply(550, text, "RCPT")); b = min(b, time.perf_counter() - t)
        worst = max(worst, b)
    out.append((size, worst))
print(json.dumps(out))
"""


def main(argv: list[str]) -> int:
    sizes = SIZES
    args = list(argv)
    if "--sizes" in args:
        i = args.index("--sizes")
        sizes = tuple(int(s) for s in args[i + 1].split(","))
        del args[i:i + 2]
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from hostile_shapes import SHAPES

    shapes = args or sorted(SHAPES)
    env_path = str(ROOT / "tests" / "unit")
    print(f"{'shape':20} {'bytes':>10} {'parse ms':>9} {'count ms':>9} {'sha256 ms':>9} "
          f"{'traced MB':>9} {'kind':>5} {'rcpts':>5}")
    worst_time, worst_rss = 0.0, 0.0
    for shape in shapes:
        proc = subprocess.run([sys.executable, "-c", _RUNNER, env_path, shape, *map(str, sizes)],
                              capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout)
        for r in res["rows"]:
            worst_time = max(worst_time, r["parse"])
            print(f"{shape:20} {r['size']:>10} {r['parse'] * 1e3:>9.1f} {r['count'] * 1e3:>9.2f} "
                  f"{r['sha256'] * 1e3:>9.1f} {r['traced_mb']:>9.1f} {r['kind']:>5} "
                  f"{r['recipients']:>5}")
        worst_rss = max(worst_rss, res["rss_mb"])
        print(f"{shape:20} peak RSS after {sizes[-1]} bytes: {res['rss_mb']:.0f} MB "
              f"(input included)")
    print(f"\nworst parse {worst_time * 1e3:.0f} ms (target < 1000 ms); "
          f"worst peak RSS {worst_rss:.0f} MB (target < 200 MB)")

    reply_sizes = (7_500, 30_000, 120_000, 1_000_000)
    proc = subprocess.run([sys.executable, "-c", _REPLY_RUNNER, env_path, *map(str, reply_sizes)],
                          capture_output=True, text=True, check=True)
    print("\njudge() on hostile SMTP replies (worst of", len(_reply_shapes()), "shapes)")
    for size, t in json.loads(proc.stdout):
        print(f"  {size:>9} chars  {t * 1e3:7.2f} ms")
    return 0


def _reply_shapes() -> list[str]:
    from hostile_shapes import smtp_reply

    return smtp_reply(10)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
