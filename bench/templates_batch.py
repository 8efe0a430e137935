"""Benchmark: POST /v1/messages/batch with 500 messages in the template form (one stored template,
per-recipient variables) against the same 500 messages with inline bodies (issue 14 item 2).

SendService.send_batch (the batch route without HTTP) on the real stores on DynamoDB Local
provisioned from template.yaml (moto for S3; the queue is a no-op), the template stored through
TemplateService. A botocore hook counts every DynamoDB request per operation and table. Printed
side by side: the handler's wall time (median of --rounds, alternating the two forms), the
DynamoDB requests, and the template reads (GetItem on TemplatesTable). The inline bodies are the
template's rendering for each recipient, so both forms store the same messages.

Run: PYTHONPATH=layers/outpost:local:. .venv/bin/python bench/templates_batch.py [--messages 500] [--rounds 3]
     [--template sign-in|realistic] [--profile]

Measured (2026-11-30, DynamoDB Local, 2 cores at load average 7, --rounds 5):
                              template form     inline bodies
  handler time (s)                     5.44              4.89
  per message (ms)                    10.89              9.79
  rendering alone (ms/msg)             0.14                 -
  GetItem (templates)                     2                 0   (the head and the version, once per batch)
  BatchGetItem / GetItem / TransactWriteItems: 500 / 500 / 500 for both (suppressions, the
  sender domain, the message's write). Runs at lower load: 5.58 vs 5.42 s. The template form
  costs the rendering and a second validation of the rendered request, ~0.3-1 ms a message.

Since s16c the rendered request is no longer validated whole again (models.rendered_trouble
checks the subject, text and html). Measured 2026-11-30 at load 11-17, --rounds 3, alternating
(before = 2b8e939's library): template form 8.66 / 8.54 s before, 8.79 / 11.70 s after; inline
8.92 / 8.97 s and 8.01 / 9.94 s: at this load the handler time cannot resolve the change. The
step itself, timed alone (2,000 calls, median of 7): 27-82 us a message before, 6-19 us after
(600 and 36,000-character html): the second validation was ~0.02-0.08 ms a message, not the
~1 ms the difference between the two forms had suggested.

--template realistic (bench/template_corpus.py: 36 KB html, 120 CSS rules, a 10-item loop; the
shape issue 14's r14b measured at ~70 ms a message) and --profile (each step alone, then cProfile).
Measured 2026-11-30, 500 messages, --rounds 3, load average 8-14 (other engineers' work), the same
command on c7f2f69's library (before) and on this one (after): CPU is this process's (the library:
DynamoDB Local and moto are other processes), the steady measure at this load; wall is noisy.
                                  before (15:22, load 8.5)    after (15:26, load 11.0)
                                  template   inline           template   inline
  per message, CPU (ms)             20.5       9.6              14.8      10.1
  rendering alone (CPU ms/msg)       9.8        -                3.4        -
  per message, wall (ms)            26.0      14.9              22.6      15.6
  fit one call (10 s - 3 s)          268       470               310       448
At lower load (15:36, load 4.4, --rounds 1, the final library; before run right after): before
26.95 / 12.27 ms wall and 23.47 / 10.25 ms CPU, rendering 9.57; after 19.84 / 12.73 ms wall and
16.16 / 10.34 ms CPU, rendering 2.93 (3.3x); fit one call 259 -> 352 (inline bodies 549-570).
Earlier pairs the same way (load 7.5-15.6): before 21.9 / 11.2 ms CPU (rendering 10.1); after, with
the text pass not yet at 1.7 ms, 14.0 / 9.6 and 16.7 / 12.2 (rendering 3.3 and 4.3). The small
sign-in template (the default): rendering 0.16 -> 0.11 ms; both forms within noise.
One message's steps alone (CPU ms): Mustache 0.3, CSS bound 2.3, `"` rewrite 0.8, css-inline 2.2,
HTML to text 3.3 (after: 2.0), parts checked 0.05, JSON + deflate 0.55. In a batch the three CSS
steps (5.3 ms) run once per shape; a message pays the marked render 0.26, the skeleton check 0.11
and the fill 0.04 instead. The rest of a message (inline bodies: ~10 ms of CPU, 4 DynamoDB
requests) is the store's and botocore's, the same for both forms.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.records import Domain
from outpost.store import DomainStore, MessageStore, SuppressionStore, TemplateStore
from outpost.templates.service import TemplateService
from outpost_local.aws import LocalAws
from outpost_local.provision import provision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import template_corpus  # noqa: E402 - beside this file (bench/ is not a package)

HTML = ("<style>p { margin: 0 0 12px } .code { font: 20px monospace }</style>"
        "<p>Hi {{first_name}},</p><p>Your sign-in code is <span class=code>{{code}}</span>.</p>"
        "<ul>{{#devices}}<li>{{name}} ({{seen}})</li>{{/devices}}</ul>"
        '<p><a href="https://app.example.com/account?u={{user_id}}">Your account</a></p>')


API_TIMEOUT = 10.0  # template.yaml: the send API function's Timeout


class _Jobs:
    def send(self, job: Any, delay: int = 0) -> None:
        pass

    def send_many(self, jobs: list[Any]) -> list[str]:
        return []


def _variables(i: int) -> dict[str, Any]:
    return {"first_name": f"User{i}", "code": f"{i:06d}", "user_id": i,
            "devices": [{"name": "Phone", "seen": "today"}, {"name": "Laptop", "seen": "2 days ago"}]}


def _form(name: str) -> tuple[dict[str, str], Any]:
    """The template's fields and its variables per message: the small sign-in code, or the
    realistic receipt of bench/template_corpus.py (36 KB html, 120 CSS rules, a 10-item loop)."""
    if name == "realistic":
        return ({"name": "Receipt", "subject": template_corpus.SUBJECT, "html": template_corpus.realistic_html()},
                template_corpus.realistic_variables)
    return {"name": "Sign-in code", "subject": "Your code, {{first_name}}", "html": HTML}, _variables


def _profiled(api: SendService) -> list[pstats.Stats]:
    """Wrap the batch's per-message step in a cProfile per call (the batch runs messages on a
    thread pool, which a profiler enabled on the calling thread would not see), timing each
    thread's CPU (wall time in a thread counts the time it waits for the others' GIL)."""
    profiles: list[pstats.Stats] = []
    inner = api._batch_item  # noqa: SLF001 - the bench times the library's own step

    def item(*a: Any, **kw: Any) -> dict:
        prof = cProfile.Profile(time.thread_time)  # CPU: the threads wait for each other's GIL
        try:
            return prof.runcall(inner, *a, **kw)
        finally:
            profiles.append(pstats.Stats(prof))

    api._batch_item = item  # type: ignore[method-assign]  # noqa: SLF001
    return profiles


def _print_profile(profiles: list[pstats.Stats], n: int) -> None:
    stats = profiles[0]
    for p in profiles[1:]:
        stats.add(p)
    print(f"one template batch of {n} under cProfile (thread CPU time; the profiler's own cost inflates "
          "Python code several times over: read it for the ranking, the steps above for the figures):")
    stats.sort_stats("tottime").print_stats(15)


Round = tuple[float, float, dict[str, int]]  # wall s, CPU s (this process: the library), requests


def _rounds(api: SendService, key: Principal, forms: dict[str, list[dict[str, Any]]],
            ops: collections.Counter[str], rounds: int) -> dict[str, list[Round]]:
    """Each form's batch `rounds` times, alternating the forms. CPU time is this process's:
    DynamoDB Local and moto run in processes of their own, so it is the library's work."""
    results: dict[str, list[Round]] = {form: [] for form in forms}
    for _ in range(rounds):
        for form, messages in forms.items():
            ops.clear()
            started, cpu = time.perf_counter(), time.process_time()
            out, _ = api.send_batch(messages, principal=key)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert out["accepted"] == len(messages), out["results"][:3]
            results[form].append((elapsed, cpu, dict(ops)))
    return results


def _print(results: dict[str, list[Round]], n: int, rounds: int) -> None:
    """Wall and CPU time per form, and how many messages one call fits: the API function's
    timeout (10 s) less the batch's reserve (BATCH_RESERVE, 3 s) at this wall time a message."""
    from outpost.api.service import BATCH_RESERVE

    print(f"{n} messages per batch, {rounds} rounds (medians), DynamoDB Local")
    print(f"{'':30}{'template form':>16}{'inline bodies':>18}")
    t, i_ = (statistics.median(r[0] for r in results[f]) for f in ("template", "inline"))
    ct, ci = (statistics.median(r[1] for r in results[f]) for f in ("template", "inline"))
    print(f"{'handler wall time (s)':30}{t:>16.2f}{i_:>18.2f}")
    print(f"{'per message, wall (ms)':30}{t / n * 1000:>16.2f}{i_ / n * 1000:>18.2f}")
    print(f"{'per message, CPU (ms)':30}{ct / n * 1000:>16.2f}{ci / n * 1000:>18.2f}")
    usable = API_TIMEOUT - BATCH_RESERVE
    print(f"{'fit one call (10 s - 3 s)':30}{int(usable / (t / n)):>16}{int(usable / (i_ / n)):>18}")


def _stages(fields: dict[str, str], variables: Any, n: int) -> None:
    """Each step of one message's rendering alone, on one thread (CPU ms per message, no profiler):
    what the per-message path runs, what a batch's shape path runs instead, and the stored body's
    JSON and deflate (store.py's _stored_body)."""
    import json
    import zlib

    import css_inline

    from outpost.models import rendered_trouble
    from outpost.templates import css, text
    from outpost.templates.mustache import Budget, compile_part, render_part

    part = compile_part(fields["html"], "html")
    htmls = [render_part(part, variables(i), Budget(2_000_000), html=True) for i in range(n)]
    inlined = [css.inline_css(h) for h in htmls]
    steps: list[tuple[str, Callable[[int], Any]]] = [
        ("Mustache render (html)", lambda i: render_part(part, variables(i), Budget(2_000_000), html=True)),
        ("CSS: bound on what it adds", lambda i: css.inlined_bytes_bound(htmls[i])),
        ("CSS: no \" in CSS (rewrite)", lambda i: css.without_double_quotes_in_css(htmls[i])),
        ("CSS: css-inline itself", lambda i: css_inline.CSSInliner(load_remote_stylesheets=False).inline(htmls[i])),
        ("HTML to text", lambda i: text.html_to_text(inlined[i])),
        ("rendered parts checked", lambda i: rendered_trouble("s", None, inlined[i])),
        ("body JSON + deflate", lambda i: zlib.compress(json.dumps({"html": inlined[i]}).encode(), 6)),
    ]
    try:
        from outpost.templates.inlined import build_shape, unmarked
        from outpost.templates.mustache import render_marked

        values: list[list[str]] = [[] for _ in range(n)]
        skeletons = [render_marked(part, variables(i), values[i]) for i in range(n)]
        shapes = {sk: build_shape(sk, len(values[i])) for i, sk in enumerate(skeletons) if sk is not None}
        steps += [("shape: marked render", lambda i: render_marked(part, variables(i), [])),
                  ("shape: skeleton checked", lambda i: unmarked(skeletons[i] or "", values[i]) == htmls[i]),
                  ("shape: values filled in", lambda i: (shapes[skeletons[i] or ""] or _none).fill(values[i]))]
    except ImportError:  # the library before shapes
        pass
    print(f"one message's steps alone (CPU ms per message, {n} messages, one thread):")
    for label, step in steps:
        started = time.process_time()
        for i in range(n):
            step(i)
        print(f"  {label:34}{(time.process_time() - started) / n * 1000:>10.3f}")


class _NoShape:
    @staticmethod
    def fill(values: Any) -> str:
        return ""


_none = _NoShape()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--template", choices=("sign-in", "realistic"), default="sign-in")
    ap.add_argument("--profile", action="store_true", help="then each rendering step alone, and one template "
                    "batch under cProfile, by phase")
    args = ap.parse_args()
    fields, variables = _form(args.template)
    aws = LocalAws("127.0.78.1")
    aws.start()
    try:
        env = provision(aws, stack_name="tplbench", parameters={
            "SendingHostname": "mta.bench.test", "BounceDomain": "bounces.bench.test"}).env()
        ddb = aws.client("dynamodb")
        ops: collections.Counter[str] = collections.Counter()

        def count(params: dict, model: Any, **_: Any) -> None:
            table = params.get("TableName", "")
            ops[f"{model.name}{' (templates)' if table == env['OUTPOST_TEMPLATES_TABLE'] else ''}"] += 1

        ddb.meta.events.register("before-parameter-build.dynamodb", count)
        domains = DomainStore(ddb, env["OUTPOST_DOMAINS_TABLE"])
        domains.put_domain(Domain(domain="bench.test", verified=True))
        templates = TemplateService(TemplateStore(ddb, env["OUTPOST_TEMPLATES_TABLE"]))
        templates.create("sign-in", fields)
        messages = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
        api = SendService(store=messages,
                          suppressions=SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]), queue=_Jobs(),
                          domains=domains, templates=templates)
        key = Principal(key_id="k1", name="bench", scopes=frozenset({"send"}), domains=None)
        n = args.messages
        base = [{"from": "hello@bench.test", "to": f"r{i}@accept.test"} for i in range(n)]
        with_template = [dict(b, template="sign-in", variables=variables(i)) for i, b in enumerate(base)]
        inline = []
        for i, b in enumerate(base):
            r = templates.render("sign-in", variables(i))
            inline.append(dict(b, subject=r["subject"], html=r["html"], text=r["text"]))
        results = _rounds(api, key, {"template": with_template, "inline": inline}, ops, args.rounds)
        _print(results, n, args.rounds)
        from outpost.templates.service import TemplateCache

        cache, started = TemplateCache(), time.process_time()
        for i in range(n):
            templates.for_send("sign-in", None, variables(i), cache)
        print(f"{'rendering alone (CPU ms/msg)':30}{(time.process_time() - started) / n * 1000:>16.2f}{'-':>18}")
        kinds = sorted(set(results["template"][-1][2]) | set(results["inline"][-1][2]))
        for k in kinds:
            print(f"{k:30}{results['template'][-1][2].get(k, 0):>16}{results['inline'][-1][2].get(k, 0):>18}")
        if args.profile:
            _stages(fields, variables, min(n, 100))
            profiles = _profiled(api)
            out, _ = api.send_batch(with_template, principal=key)
            assert out["accepted"] == n
            _print_profile(profiles, n)
    finally:
        aws.stop()


if __name__ == "__main__":
    main()
