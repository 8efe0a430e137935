"""Benchmark: each handler's cold-start init beside the floor, and the API's first send.

A Lambda cold start pays for every import the handler module triggers and for what it builds
at module level (functions/*/app.py build their service once per container). This script
starts the embedded local stack (moto, DynamoDB Local: the sender and the bounce processor read
their return-path key from Secrets Manager at init) on 127.0.15.x and times, in fresh
interpreters with the stack's environment, the best of --runs:
  floor      `import boto3` + one client created: what every AWS-calling Python Lambda pays
  send API   importing functions/send_api/app.py (which builds the app), and then its first
             request, POST /v1/messages (events/api_post_message.json with the stack's key,
             without an Idempotency-Key): a lazy import moves time there, so the sum counts
  sender     importing functions/sender/app.py (builds the delivery service)
  bounces    importing functions/bounce_processor/app.py (builds the bounce service)
each as a ratio to the floor measured in the same run, and the slowest top-level imports of the
send API from `python -X importtime`. --before DIR measures a second copy of the code too (e.g.
`git archive main layers functions | tar -x -C DIR`) against the same stack, in the same run.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/cold_start.py [--runs 5] [--before DIR]
(--built DIR [--built-before DIR] [--instructions] --python PY312: see below)

--built DIR --python PY312 measures a `sam build` output the way Lambda runs it instead: on
python3.12 (PY312: a venv with boto3 installed normally, so precompiled as the runtime has it;
the floor runs there too), each handler's function directory first on sys.path and the layers
on PYTHONPATH with PYTHONDONTWRITEBYTECODE=1 (Lambda's /opt is read-only), in three ways:
OutpostLayer as sam's python3.12 workflow builds it (no .pyc: every module of Outpost AND of
its dependencies compiled at each cold start), merged with OutpostBytecodeLayer (layers/Makefile:
checked-hash .pyc), and (send API) a copy compiled here with unchecked-hash. E.g.:
  .ci/sam_check.sh (or its sam build for x86_64), then
  PYTHONPATH=layers/outpost:local .venv/bin/python bench/cold_start.py --runs 5 \
      --built .aws-sam/ci-x86_64/build --python .aws-sam/rie-venv/bin/python
--built-before DIR2 measures another build (of the commit before a change) in the same rounds;
--instructions also counts each init's instructions under valgrind's callgrind (apt-get install
valgrind; a few minutes): a figure the machine's load does not move.

Measured (issue 15; a 2-core machine shared with other jobs, load average 8-19: absolute
figures swing 2x within minutes, so the floor and the handlers are interleaved per round and the
ratios, from one run, are what to compare). Before = 7d35068 (main before the change):
  git archive 7d35068 layers functions | tar -x -C /tmp/s15a_before
  PYTHONPATH=layers/outpost:local .venv/bin/python bench/cold_start.py --before /tmp/s15a_before
  run 1 (07:14 UTC): floor best 332 ms
    send API  before 1005 ms = 3.03x, first POST 33 ms, sum 1038 ms
              after   523 ms = 1.58x, first POST 30 ms, sum  553 ms
    sender    before 3.08x, after 2.13x;  bounces before 2.73x, after 1.86x
  run 2 (07:20 UTC, with raw_message lazy too): floor best 352 ms (median 565)
    send API  before 1321 ms = 3.75x, first POST 38 ms, sum 1362 ms
              after   536 ms = 1.52x (median of per-round ratios 1.52x), first POST 37 ms, sum 584 ms
    sender    before 3.75x, after 2.27x;  bounces before 2.65x, after 1.62x
Slice s15f (Powertools' package __inits__ deferred, webhook models' builds deferred, the
idempotency layer on first use), before = e49a7e5 (git archive e49a7e5 layers functions | tar -x
-C /tmp/s15f_before), `... bench/cold_start.py --before /tmp/s15f_before --idempotency-key`, load
average 5-8, outpost's code compiled from source (PYTHONDONTWRITEBYTECODE=1, no __pycache__).
Until this slice the event kept its Idempotency-Key in multiValueHeaders (Powertools reads it
there), so every first POST after the first sample was a replay; fixed, hence the larger figures.
Init, best wall = ratio to the best floor / median per-round ratio / best-CPU ratio; first POST:
  run 4 (09:43 UTC): floor 316 ms wall, 297 ms CPU
    send API before 789 ms = 2.50x / 1.67x / 1.92x, first POST  98 ms, sum 887 ms
             after  682 ms = 2.16x / 1.68x / 1.76x, first POST  76 ms, sum 758 ms
             with an Idempotency-Key: sum before 732 ms, after 636 ms
    sender before 2.66x / CPU 2.16x, after 2.30x / 2.22x; bounces 1.84x / 1.86x, 2.07x / 1.96x
  run 5 (09:47 UTC): floor 352 ms wall, 289 ms CPU
    send API before 650 ms = 1.85x / 1.96x / 1.85x, first POST  97 ms, sum 747 ms
             after  530 ms = 1.50x / 1.21x / 1.83x, first POST  77 ms, sum 607 ms
             with an Idempotency-Key: sum before 796 ms, after 687 ms
    sender before 1.94x / 2.28x, after 2.03x / 2.22x; bounces 1.91x / 2.00x, 1.68x / 2.03x
  run 6 (09:51 UTC; a load spike: the unchanged sender went 2.70x -> 3.48x within the run):
    floor 305 ms wall, 300 ms CPU
    send API before 529 ms = 1.73x / 1.79x / 1.72x, first POST  63 ms, sum 591 ms
             after  700 ms = 2.29x / 2.04x / 1.64x, first POST 110 ms, sum 820 ms
    sender before 2.70x / 2.15x, after 3.48x / 2.57x; bounces 2.70x / 1.98x, 1.88x / 1.86x
Slice s15g (the bytecode layer), --built of an x86_64 build, python 3.12.1, 3 runs of --runs 5
(10:19-10:21 UTC, load average 1.4-3.2); init best = ratio to the best floor / median per-round
ratio; sum = init + first POST:
  floor 237 / 209 / 210 ms (CPU 225 / 209 / 210 ms)
  send API  as sam builds it  823 / 687 / 702 ms = 3.48x / 3.28x / 3.33x (median 3.48x / 3.35x / 3.09x),
                              sum 913 / 747 / 796 ms
            + bytecode layer  397 / 383 / 389 ms = 1.68x / 1.83x / 1.85x (median 1.73x / 1.74x / 1.78x),
                              sum 508 / 471 / 508 ms
            unchecked-hash    526 / 387 / 386 ms = 2.22x / 1.85x / 1.84x: no measurable gain over checked
  sender    5.13x / 4.51x / 4.39x -> 2.45x / 2.57x / 2.34x;  bounces 3.19x / 3.18x / 3.23x -> 1.98x / 2.04x / 2.24x
  The first POST is 30-45 ms slower after the bytecode layer in every run (61-80 ms -> 89-111 ms),
  the sum still drops by 280-400 ms: the first full (generation 2) garbage collection, which
  compiling from source triggered during init, now falls in the first request (gc.get_stats()
  around it: collections [121, 11, 0] -> [127, 11, 1]). A gc.freeze() at the end of init (in the
  probe, 10:28 UTC) made it 54-68 ms, the sum 473-484 ms: not applied (functions/*/app.py are
  outside this slice); a candidate for the handlers, SnapStart or not.
Slice s16a (issue 15 item 1, the send API's init to at most 1.5x the floor): functions/*/app.py
run init inside outpost/cold_start.py's handler_init: no garbage collection during init (then
gc.freeze(), collection back on), and outpost/code_cache.py: the code of the texts dataclasses
and typing compile at import, built by layers/Makefile into the bytecode layer and looked up
first. --built of an x86_64 build, --built-before the x86_64 build of 229af07 (main before the
change; git archive 229af07 | tar -x, then the same sam build), python 3.12.1, --runs 5, three
runs (12:51-12:57 UTC, load average 2-8). Init best = ratio to the best floor / median per-round
ratio; sum = init + first POST, best:
  floor 209 / 206 / 220 ms
  send API  before 386 / 373 / 363 ms = 1.84x / 1.81x / 1.64x (median 2.28x / 1.73x / 1.62x),
                   sum 451 / 427 / 438 ms
            after  303 / 314 / 305 ms = 1.45x / 1.52x / 1.38x (median 1.40x / 1.48x / 1.31x),
                   sum 377 / 387 / 381 ms (first POST 71 / 69 / 68 ms, before 66 / 54 / 57)
  sender    before 2.34x / 2.41x / 2.19x -> after 1.91x / 1.92x / 1.73x
  bounces   before 2.05x / 2.10x / 1.99x -> after 1.75x / 1.81x / 1.59x
  run 4 (13:03 UTC, load average 6-8: the floor's median 370 ms against its best 230 ms):
    send API before 440 ms = 1.91x (median 2.62x, CPU 1.82x), sum 533 ms;
             after  372 ms = 1.62x (median 2.04x, CPU 1.47x), sum 454 ms
  --instructions (runs 1 and 4, the same counts; callgrind, init only, the same under any load):
  floor 1,114 M; send API 1,974 -> 1,576 M = 1.77x -> 1.41x; sender 2,962 -> 2,286 M = 2.66x ->
  2.05x; bounces 2,836 -> 2,328 M = 2.55x -> 2.09x.
  Where the send API's init went over the floor before (callgrind by C function, python -X
  importtime best of 7, cProfile): of ~860 M instructions over the floor, 384 M parsing and
  compiling source text at run time (dataclasses' ~430 exec()s of 178 KB of generated methods,
  65% of them ours: records.py 62 KB, config.py's Settings 21 KB, webhooks/records.py 10 KB;
  and ~1,000 ForwardRef compiles: pydantic_core's TypedDicts 536, our models' fields 261); 127
  collections freeing ~500 objects (60 M; 8-14% of init's CPU time under load); unmarshalling
  the larger set of .pyc +64 M; DynamoDB's service model +38 M of JSON (the second client costs
  5-20 ms, the first, as in the floor, 80-200 ms under load). By module (importtime, best of 7
  at load 11, self): pydantic and its parts 55 ms, records.py 19, models.py 12, api/ 18,
  Powertools 17 (logging, metrics, event_handler; jmespath etc. are the floor's), webhooks/ 8,
  store.py 4.8 (its own body; best of 7 after the change 2.3 ms, cumulative ~5 ms).
Slice s17a (2026-11-30; the template and webhook route modules imported on the first request to
one (api/lazy_routes.py), the SQS client on first use, the webhook job's model out of config.py's
and store.py's imports). The rounds now sample a floor just before each handler: each handler's
best is against the best of its own floor samples (as many), the median per-round ratio beside
it, and PASS/FAIL against GOAL. --built of x86_64 builds (sam build), python 3.12.1, --built-before
the build of c7f2f69 (main before the slice), --only "send API +bytecode" --only "send API before":
  the bench as it was, before the slice (14:46-14:50 UTC, load 3.8-4.1), 3 runs:
    send API init 1.09x / 2.31x / 1.33x the best floor (median per round 1.30x / 2.10x / 1.81x;
    CPU 1.25x / 1.37x / 1.38x), sum 398 / 784 / 445 ms
  after, the new rounds (15:00-15:02 UTC, load 4.2-6.5), 3 runs, after vs before in the same rounds:
    after  1.20x / 1.11x / 1.20x (median 1.23x / 1.21x / 1.12x; CPU 1.33x / 1.39x / 1.39x),
           sum 392 / 764 / 1190 ms (first POST 66 / 108 / 208 ms)
    before 1.41x / 1.27x / 1.32x (median 1.23x / 1.34x / 1.66x; CPU 1.37x / 1.32x / 1.37x),
           sum 375 / 983 / 1154 ms
  at load 10-16 (15:17-15:25 UTC, 6 runs) wall time is mostly waiting for a CPU (the floor's
  median 500-1,300 ms against 220-250 ms of CPU): after 0.87x-1.81x (median 1.18x-1.61x), before
  1.01x-2.04x (median 1.06x-1.96x); CPU 1.35x-1.47x for both. Not a measurement of the code.
  --instructions (15:03-15:07 UTC): floor 1,114 M; send API before 1,578 M = 1.42x, after
  1,521 M = 1.37x (-57 M). Left over the floor, by import (python -X importtime, best of 7,
  self, modules the floor does not import): pydantic and its parts ~30 ms, the DynamoDB client
  (the floor's one client), outpost/models.py 10-14 ms (the read routes' 22 response models are
  44 M instructions of it: callgrind of `import outpost.models` with and without them), api/
  8.8 ms, Powertools' event_handler 7.6 ms, logging and metrics 4 ms, the email package 2.8 ms.
Bytecode (09:31 UTC, a shell loop: 10 interleaved rounds of fresh interpreters (the PROBE's
import only), best of each): floor 422 ms wall / 278 ms CPU; before, compiled from source,
880 ms = 2.09x (CPU 1.84x); after, from source, 708 ms = 1.68x (CPU 1.77x); after, outpost's
modules read from .pyc (a copy compiled with compileall), 562 ms = 1.33x (CPU 1.55x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = ("import time; t, c = time.perf_counter(), time.process_time(); import boto3; "
         "boto3.session.Session().client('sqs'); print(time.perf_counter() - t, -1, time.process_time() - c)")

# argv: the function's directory, then (optional) the event of a first request to time.
PROBE = r"""
import json, sys, time
t, c = time.perf_counter(), time.process_time()
sys.path.insert(0, sys.argv[1])
import app
init, init_cpu = time.perf_counter() - t, time.process_time() - c
first = -1.0
if len(sys.argv) > 2:
    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "bench", 1024, "bench-1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
        def get_remaining_time_in_millis(self): return 30000
    event = json.loads(sys.argv[2])
    if len(sys.argv) > 3:  # a fresh Idempotency-Key: the first request then uses the idempotency layer
        import uuid
        key = uuid.uuid4().hex  # never a replay of an earlier sample's
        event["headers"]["Idempotency-Key"], event["multiValueHeaders"]["Idempotency-Key"] = key, [key]
    t = time.perf_counter()
    out = app.lambda_handler(event, Context())
    first = time.perf_counter() - t
    assert out["statusCode"] == 202, out
print(init, first, init_cpu)
"""

HANDLERS = {"send API": "send_api", "sender": "sender", "bounces": "bounce_processor"}


def _sample(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(init, first request, init's CPU time) in ms, in a fresh interpreter."""
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[-3]) * 1000, float(out[-2]) * 1000, float(out[-1]) * 1000


def _rounds(programs: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, list]:
    """Each program once per round, each sample right after a floor sample of its own, so that
    the two see the same load (on a shared machine it swings by 2x within a minute): a handler's
    per-round ratio is to the floor measured just before it. samples["floor"] holds every floor
    sample; each handler's sample ends with its floor's (init, CPU)."""
    floor_argv, floor_env = programs["floor"]
    samples: dict[str, list] = {name: [] for name in programs}
    for _ in range(runs):
        for name, (argv, env) in programs.items():
            if name == "floor":
                continue
            floor = _sample(floor_argv, floor_env)
            samples["floor"].append(floor)
            samples[name].append((*_sample(argv, env), floor[0], floor[2]))
    return samples


def _importtime(env: dict[str, str], code_dir: Path, top: int) -> list[tuple[int, str]]:
    code = f"import sys; sys.path.insert(0, {str(code_dir / 'functions/send_api')!r}); import app"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stderr
    rows = []
    for line in out.splitlines():
        # "import time:  self [us] | cumulative | imported package"; nesting is indentation.
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line[len("import time:"):].split("|", 2)
        if not name[1:].startswith(" ") or name.strip().startswith("outpost."):
            rows.append((int(cum_us), name.strip()))
    return sorted(rows, reverse=True)[:top]


def _programs(label: str, code_dir: Path, env: dict[str, str], event: dict, keyed: bool) -> dict:
    env = dict(env, PYTHONPATH=f"{code_dir / 'layers/outpost'}:{ROOT / 'local'}")
    out = {}
    for name, fn in HANDLERS.items():
        argv = [sys.executable, "-c", PROBE, str(code_dir / "functions" / fn)]
        out[f"{label} {name}"] = ([*argv, json.dumps(event)] if name == "send API" else argv, env)
        if name == "send API" and keyed:
            out[f"{label} send API+key"] = ([*argv, json.dumps(event), "key"], env)
    return out


GOAL = 1.5  # issue 15 item 1: the send API's init at most 1.5x the floor, best of 5


def _report(samples: dict[str, list]) -> None:
    floor_runs = samples.pop("floor")
    floors = [s[0] for s in floor_runs]
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])} (wall time waits for the CPU "
          "under load: compare the CPU ratios and --instructions)")
    print(f"floor: import boto3 + one client: best {min(floors):5.0f} ms, median {statistics.median(floors):5.0f} ms "
          f"({len(floors)} fresh interpreters, one just before each handler's sample); CPU time best "
          f"{min(s[2] for s in floor_runs):5.0f} ms")
    verdicts = []
    for name, runs in samples.items():
        # best of its runs against the best of the floor samples taken just before them (as many)
        init, floor = min(r[0] for r in runs), min(r[3] for r in runs)
        # the per-round ratio: each handler beside the floor sampled just before it
        ratio = statistics.median(r[0] / r[3] for r in runs)
        # CPU time (the process's own) swings less than wall time with the machine's load
        cpu, floor_cpu = min(r[2] for r in runs), min(r[4] for r in runs)
        line = (f"{name:16s} init best {init:5.0f} ms = {init / floor:4.2f}x its floors' best ({floor:3.0f} ms); "
                f"median ratio {ratio:4.2f}x; CPU {cpu:4.0f} ms = {cpu / floor_cpu:4.2f}x")
        if runs[0][1] >= 0:
            total = min(r[0] + r[1] for r in runs)
            line += f"; + first POST /v1/messages best {min(r[1] for r in runs):4.0f} ms, sum best {total:5.0f} ms"
        print(line)
        if name.startswith("now send API") or name == "send API +bytecode layer":
            verdicts.append((name, init / floor, ratio))
    for name, best, median in verdicts:  # the goal, for the send API as it ships
        ok = "PASS" if best <= GOAL else "FAIL"
        print(f"{ok}: {name} init best of {len(samples[name])} {best:4.2f}x the floor (goal <= {GOAL}x); "
              f"median per-round ratio {median:4.2f}x ({'PASS' if median <= GOAL else 'FAIL'})")


def _bytecode_note(env: dict[str, str]) -> str:
    """Whether the handlers' own code was compiled at each import, as in Lambda: sam build's
    python_pip workflow ships the layer without .pyc files (it excludes *.pyc and __pycache__),
    and /opt is read-only, so a cold start compiles every module of the layer it imports."""
    cached = any((ROOT / "layers/outpost/outpost").rglob("*.pyc"))
    if env.get("PYTHONDONTWRITEBYTECODE") and not cached:
        return ("outpost's modules: compiled from source at each import (no .pyc), as in Lambda, where "
                "the layer's dependencies compile too (here they have .pyc in .venv)")
    return ("outpost's modules: read from .pyc files, unlike in Lambda's layer (none there); "
            "PYTHONDONTWRITEBYTECODE=1 and no __pycache__ under layers/ measure as in Lambda")


def _layer_copy(dest: Path, *layers: Path) -> Path:
    """The layers merged as Lambda merges them into /opt (later ones add files, here __pycache__)."""
    for layer in layers:  # without any __pycache__ a run of the build (tests/sam/invoke_rie.py) wrote
        shutil.copytree(layer / "python", dest, dirs_exist_ok=True,
                        ignore=None if layer.name == "OutpostBytecodeLayer" else shutil.ignore_patterns("__pycache__"))
    return dest


def _built_programs(args: argparse.Namespace, env: dict[str, str], event: dict, work: Path) -> dict:
    """The send API, the sender and the bounce processor of a `sam build` output, on python3.12,
    with each way of shipping the layer: as sam's python3.12 workflow builds OutpostLayer (no
    .pyc: every module compiled at each import, as on Lambda's read-only /opt), merged with
    OutpostBytecodeLayer (layers/Makefile: checked-hash .pyc), and, for the send API, a copy
    compiled here with unchecked-hash (what the hash check costs)."""
    build, layer = args.built, args.built / "OutpostLayer"
    env = dict(env, PYTHONDONTWRITEBYTECODE="1")  # nothing cached between samples
    variants = {"source": _layer_copy(work / "source", layer)}
    if (build / "OutpostBytecodeLayer/python").is_dir():
        variants["+bytecode layer"] = _layer_copy(work / "bytecode", layer, build / "OutpostBytecodeLayer")
    unchecked = _layer_copy(work / "unchecked", layer)
    subprocess.run([args.python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(unchecked)],
                   check=True, capture_output=True)
    for cache in (build / "OutpostBytecodeLayer/python/outpost/__pycache__").glob("compiled-text.*"):
        shutil.copy(cache, unchecked / "outpost/__pycache__")  # outpost/code_cache.py's file, as shipped
    fns = {"send API": "SendApiFunction", "sender": "SenderFunction", "bounces": "BounceProcessorFunction"}
    programs = {"floor": ([args.python, "-c", FLOOR], env)}
    for name, fn in fns.items():
        for label, path in [*variants.items(), *([("unchecked-hash", unchecked)] if name == "send API" else [])]:
            argv = [args.python, "-c", PROBE, str(build / fn), *([json.dumps(event)] if name == "send API" else [])]
            programs[f"{name} {label}"] = (argv, dict(env, PYTHONPATH=str(path)))
    if args.built_before:  # another build's layers and functions, with its bytecode layer, in the same rounds
        old = args.built_before
        before = _layer_copy(work / "before", old / "OutpostLayer", old / "OutpostBytecodeLayer")
        for name, fn in fns.items():
            argv = [args.python, "-c", PROBE, str(args.built_before / fn),
                    *([json.dumps(event)] if name == "send API" else [])]
            programs[f"{name} before"] = (argv, dict(env, PYTHONPATH=str(before)))
    return programs


def _only(programs: dict[str, tuple[list[str], dict[str, str]]], only: list[str]) -> dict:
    """The floor and the handlers whose label contains one of `only` (all without it)."""
    return {name: p for name, p in programs.items() if name == "floor" or not only or any(o in name for o in only)}


def _instructions(argv: list[str], env: dict[str, str]) -> float:
    """Millions of instructions the program runs (valgrind's callgrind; no first request): unlike
    time, the same under any load, so a 2-core machine shared with other jobs measures it too."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *argv[:4]],
                             env=dict(env, PYTHONHASHSEED="0"), cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stderr.rsplit("Collected : ", 1)[1].split()[0]) / 1e6


def _report_instructions(programs: dict[str, tuple[list[str], dict[str, str]]]) -> None:
    wanted = [name for name in programs if name == "floor" or name.endswith(("+bytecode layer", "before"))]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(wanted, pool.map(lambda n: _instructions(*programs[n]), wanted), strict=True))
    print("instructions (valgrind --tool=callgrind, init only):")
    for name, count in counts.items():
        ratio = f" = {count / counts['floor']:.2f}x the floor" if name != "floor" else ""
        print(f"  {name:24s} {count:6.0f} M{ratio}")


def _measure_built(args: argparse.Namespace, env: dict[str, str], event: dict) -> int:
    version = subprocess.run([args.python, "-c", "import sys, boto3; print(sys.version.split()[0], boto3.__version__)"],
                             check=True, capture_output=True, text=True).stdout.split()
    print(f"{args.built} on python {version[0]} ({args.python}), boto3 {version[1]} (with its .pyc, as in the runtime)")
    with tempfile.TemporaryDirectory() as tmp:
        programs = _only(_built_programs(args, env, event, Path(tmp)), args.only)
        _report(_rounds(programs, args.runs))
        if args.instructions:
            _report_instructions(programs)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", type=Path, help="another copy of layers/ and functions/ to measure too")
    ap.add_argument("--idempotency-key", action="store_true",
                    help="also time the send API whose first POST carries an Idempotency-Key")
    ap.add_argument("--built", type=Path, help="a `sam build` output directory: measure it instead "
                    "(the layer as built, with the bytecode layer, and compiled here unchecked-hash)")
    ap.add_argument("--built-before", type=Path, help="with --built: another `sam build` output (e.g. of the "
                    "commit before a change) measured with its bytecode layer in the same rounds")
    ap.add_argument("--instructions", action="store_true", help="with --built: also count each init's "
                    "instructions under valgrind (the floor, the bytecode layer, the build before)")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="measure only the handlers whose label contains TEXT (repeatable; e.g. 'send API +bytecode')")
    ap.add_argument("--python", default=sys.executable,
                    help="with --built: the python3.12 to run it with (a venv with boto3, as the runtime has it)")
    args = ap.parse_args()
    from outpost_local.stack import SENDING_DOMAIN, LocalStack, StackConfig

    with LocalStack(StackConfig(ip_prefix="127.0.15", api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                smtp_port=0, postfix=False)) as stack:
        for poller in stack.pollers.values():  # nothing else competing for the CPU
            poller.stop()
        env = dict(os.environ, **stack.env)
        event = json.loads((ROOT / "events/api_post_message.json").read_text())
        # Without the sample's Idempotency-Key in either header map (Powertools reads a header
        # parameter from multiValueHeaders): with it, every sample after the first was a replay.
        for headers in ("headers", "multiValueHeaders"):
            event[headers] = {k: v for k, v in event[headers].items() if k != "Idempotency-Key"}
        event["headers"]["Authorization"] = f"Bearer {stack.api_key}"
        event["multiValueHeaders"]["Authorization"] = [f"Bearer {stack.api_key}"]
        event["body"] = json.dumps(dict(json.loads(event["body"]), **{"from": f"Shop <orders@{SENDING_DOMAIN}>"}))
        if args.built:
            return _measure_built(args, env, event)
        programs = {"floor": ([sys.executable, "-c", FLOOR], env)}
        if args.before:
            programs.update(_programs("before", args.before, env, event, args.idempotency_key))
        programs.update(_programs("now", ROOT, env, event, args.idempotency_key))
        _report(_rounds(_only(programs, args.only), args.runs))
        print(_bytecode_note(env))
        print("slowest imports of the send API (top-level, and outpost.*), cumulative:")
        for us, name in _importtime(dict(env, PYTHONPATH=f"{ROOT / 'layers/outpost'}:{ROOT / 'local'}"), ROOT, 12):
            print(f"  {us / 1000:7.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
