"""Benchmark: POST /v1/messages/batch with 500 messages in the template form (one stored template,
per-recipient variables) against the same 500 messages with inline bodies (issue 14 item 2).

SendService.send_batch (the batch route without HTTP) on the real stores on DynamoDB Local
provisioned from template.yaml (moto for S3; the queue is a no-op), the template stored through
TemplateService. A botocore hook counts every DynamoDB request per operation and table. Printed
side by side: the handler's wall time (median of --rounds, alternating the two forms), the
DynamoDB requests, and the template reads (GetItem on TemplatesTable). The inline bodies are the
template's rendering for each recipient, so both forms store the same messages.

Run: PYTHONPATH=layers/outpost:local:. .venv/bin/python bench/templates_batch.py [--messages 500] [--rounds 3]

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
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from typing import Any

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.records import Domain
from outpost.store import DomainStore, MessageStore, SuppressionStore, TemplateStore
from outpost.templates.service import TemplateService
from outpost_local.aws import LocalAws
from outpost_local.provision import provision

HTML = ("<style>p { margin: 0 0 12px } .code { font: 20px monospace }</style>"
        "<p>Hi {{first_name}},</p><p>Your sign-in code is <span class=code>{{code}}</span>.</p>"
        "<ul>{{#devices}}<li>{{name}} ({{seen}})</li>{{/devices}}</ul>"
        '<p><a href="https://app.example.com/account?u={{user_id}}">Your account</a></p>')


class _Jobs:
    def send(self, job: Any, delay: int = 0) -> None:
        pass

    def send_many(self, jobs: list[Any]) -> list[str]:
        return []


def _variables(i: int) -> dict[str, Any]:
    return {"first_name": f"User{i}", "code": f"{i:06d}", "user_id": i,
            "devices": [{"name": "Phone", "seen": "today"}, {"name": "Laptop", "seen": "2 days ago"}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
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
        templates.create("sign-in", {"name": "Sign-in code", "subject": "Your code, {{first_name}}", "html": HTML})
        messages = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
        api = SendService(store=messages,
                          suppressions=SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]), queue=_Jobs(),
                          domains=domains, templates=templates)
        key = Principal(key_id="k1", name="bench", scopes=frozenset({"send"}), domains=None)
        n = args.messages
        base = [{"from": "hello@bench.test", "to": f"r{i}@accept.test"} for i in range(n)]
        with_template = [dict(b, template="sign-in", variables=_variables(i)) for i, b in enumerate(base)]
        inline = []
        for i, b in enumerate(base):
            r = templates.render("sign-in", _variables(i))
            inline.append(dict(b, subject=r["subject"], html=r["html"], text=r["text"]))
        results: dict[str, list[tuple[float, dict[str, int]]]] = {"template": [], "inline": []}
        for _ in range(args.rounds):
            for form, messages in (("template", with_template), ("inline", inline)):
                ops.clear()
                started = time.perf_counter()
                out, _ = api.send_batch(messages, principal=key)
                elapsed = time.perf_counter() - started
                assert out["accepted"] == n, out["results"][:3]
                results[form].append((elapsed, dict(ops)))
        print(f"{n} messages per batch, {args.rounds} rounds (median wall time), DynamoDB Local")
        print(f"{'':28}{'template form':>18}{'inline bodies':>18}")
        t = statistics.median(r[0] for r in results["template"])
        i_ = statistics.median(r[0] for r in results["inline"])
        print(f"{'handler time (s)':28}{t:>18.2f}{i_:>18.2f}")
        print(f"{'per message (ms)':28}{t / n * 1000:>18.2f}{i_ / n * 1000:>18.2f}")
        from outpost.templates.service import TemplateCache

        cache, started = TemplateCache(), time.perf_counter()
        for i in range(n):
            templates.for_send("sign-in", None, _variables(i), cache)
        print(f"{'rendering alone (ms/msg)':28}{(time.perf_counter() - started) / n * 1000:>18.2f}{'-':>18}")
        kinds = sorted(set(results["template"][-1][1]) | set(results["inline"][-1][1]))
        for k in kinds:
            print(f"{k:28}{results['template'][-1][1].get(k, 0):>18}{results['inline'][-1][1].get(k, 0):>18}")
    finally:
        aws.stop()


if __name__ == "__main__":
    main()
