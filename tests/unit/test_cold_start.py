"""The send API's cold start stays lean (issue 15 item 1), checked without timing anything.

A fresh interpreter imports functions/send_api/app.py (which builds the app) and reports what
it loaded: the modules only some routes or other functions need (the OpenAPI document's models,
dnspython and the domain checks, MTA-STS, the bounce classifier) stay unloaded, and only the
client init needs (DynamoDB; SQS on first use) is built. bench/cold_start.py has the timings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from outpost.bootstrap import lazy

ROOT = Path(__file__).resolve().parents[2]

# Each of these cost the cold start a measurable share (bench/cold_start.py, python -X importtime).
LAZY_MODULES = (
    "aws_lambda_powertools.event_handler.openapi.models",  # ~200 pydantic models: /openapi.json only
    "dns.resolver",  # dnspython: the domain routes and the sender
    "outpost.api.domains",  # the domain routes' service
    "outpost.tls_policy",  # MTA-STS: the sender
    "outpost.net",
    "outpost.bounces",  # the bounce classifier compiles its patterns at import: sender, bounces
    "outpost.bounces.classify",
    "outpost.raw_message",  # SMTP submission's raw path
    # Powertools' package __init__s, deferred (outpost/lazy_imports.py): the other resolvers
    # (AppSync's imports asyncio) and the other event types' data classes
    "asyncio",
    "aws_lambda_powertools.event_handler.appsync",
    "aws_lambda_powertools.event_handler.bedrock_agent",
    "aws_lambda_powertools.event_handler.vpc_lattice",
    "aws_lambda_powertools.utilities.data_classes.sqs_event",
    "aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event",
    "aws_lambda_powertools.utilities.idempotency",  # the idempotency layer: a request with Idempotency-Key
    "pystache",  # templates (issue 14): only a request that uses one
    "css_inline",
    "outpost.templates.mustache",
    "outpost.templates.text",
    "outpost.templates.service",
    # Route modules imported on the first request that reaches one of their routes (api/lazy_routes.py)
    "outpost.api.templates",
    "outpost.api.webhooks",
    "outpost.webhooks.jobs",  # the webhook job's model: config.py reads only the schedule (webhooks/schedule.py)
)

PROBE = """
import gc, json, sys
collections = []
def in_app(frame):  # a collection while app.py runs (compiling its source, before, may collect)
    while frame is not None and not frame.f_code.co_filename.endswith("send_api/app.py"):
        frame = frame.f_back
    return frame is not None
gc.callbacks.append(lambda phase, info: collections.append(info["generation"])
                    if phase == "start" and in_app(sys._getframe()) else None)
sys.path.insert(0, sys.argv[1])
import app
gc_seen = {"collections": len(collections), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
from outpost import bootstrap
from pydantic import BaseModel
def models(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from models(sub)
built = sorted(f"{m.__module__}.{m.__qualname__}" for m in set(models(BaseModel))
               if m.__module__.startswith("outpost") and m.__dict__.get("__pydantic_complete__"))
print(json.dumps({"modules": sorted(sys.modules), "clients": bootstrap.aws.cache_info().currsize,
                  "routes": len(app.app._static_routes) + len(app.app._dynamic_routes), "built": built,
                  "gc": gc_seen}))
"""


def _cold_import() -> dict:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "functions/send_api")], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_send_api_init_leaves_the_heavy_modules_unloaded() -> None:
    seen = _cold_import()
    modules = set(seen["modules"])
    assert "outpost.api.routes" in modules and "pydantic" in modules  # the probe did import the app
    assert seen["routes"] > 20  # and built it, every route registered (domains too)
    assert sorted(m for m in LAZY_MODULES if m in modules) == []
    assert seen["clients"] == 1  # DynamoDB; SQS, S3 and Secrets Manager on first use


def test_send_api_init_runs_no_garbage_collection_and_freezes_what_it_built() -> None:
    """Init's ~130 collections freed almost nothing (about 500 objects of 120,000): app.py's
    handler_init (outpost/cold_start.py) turns collection off for init, freezes what init built,
    and turns it back on for the requests."""
    seen = _cold_import()["gc"]
    assert seen["collections"] == 0
    assert seen["enabled"] is True
    assert seen["frozen"] > 50_000


def test_send_api_init_builds_no_pydantic_model() -> None:
    """Every model of ours defers its schema build to first use (defer_build): init builds none."""
    assert _cold_import()["built"] == []


# The same requests answered by an app whose Powertools packages were deferred (the Lambda's
# path: outpost.api is imported first) and by one imported after Powertools' event_handler was
# imported whole: the same status, headers and body, the OpenAPI document included.
ANSWERS = """
import json, sys
if sys.argv[2] == "plain":
    import aws_lambda_powertools.event_handler, aws_lambda_powertools.utilities.data_classes
if sys.argv[2] == "cached":  # the compiled texts of the bytecode layer (outpost/code_cache.py)
    from pathlib import Path
    from outpost import code_cache
    assert code_cache.install(Path(sys.argv[3])) > 300
sys.path.insert(0, sys.argv[1])
import app
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
deferred = "aws_lambda_powertools.event_handler.appsync" not in sys.modules
def event(method, path, headers=None, body=None):
    return {"httpMethod": method, "path": path, "resource": "/{proxy+}", "headers": headers or {},
            "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "pathParameters": {"proxy": path.lstrip("/")}, "requestContext": {"requestId": "r1", "stage": "v1"},
            "body": body, "isBase64Encoded": False}
out = [app.app.resolve(e, None) for e in (
    event("GET", "/openapi.json"), event("HEAD", "/openapi.json"), event("GET", "/nowhere"),
    event("DELETE", "/openapi.json"), event("OPTIONS", "/openapi.json"), event("POST", "/v1/messages"))]
hits = __import__("outpost.code_cache").code_cache.stats["hits"]
print(json.dumps({"deferred": deferred, "isinstance": isinstance(app.app, APIGatewayRestResolver), "out": out,
                  "hits": hits}))
"""


def _answers(mode: str, *args: str) -> dict:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", ANSWERS, str(ROOT / "functions/send_api"), mode, *args], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_the_deferred_powertools_answer_as_the_whole_package_does() -> None:
    deferred, plain = _answers("deferred"), _answers("plain")
    assert deferred["deferred"] and not plain["deferred"]  # the two paths were taken
    assert deferred["isinstance"] and plain["isinstance"]
    assert [a["statusCode"] for a in deferred["out"]] == [200, 200, 404, 405, 204, 401]
    assert json.loads(deferred["out"][0]["body"])["paths"]["/v1/messages"]["post"]  # the document
    assert deferred["out"] == plain["out"]


def test_the_app_with_the_compiled_texts_answers_as_without(tmp_path: Path) -> None:
    """outpost/code_cache.py as the bytecode layer ships it (layers/Makefile: build() of MODULES),
    installed before the app is imported: the same six answers, byte for byte."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    cache = tmp_path / "compiled-text.marshal"
    subprocess.run([sys.executable, "-c", f"from outpost.code_cache import build; build(__import__('pathlib').Path("
                    f"{str(cache)!r}))"], env=env, cwd=ROOT, check=True, timeout=300)
    cached, deferred = _answers("cached", str(cache)), _answers("deferred")
    assert cached["hits"] > 1000 and deferred["hits"] == 0  # the texts were served from the file
    assert cached["out"] == deferred["out"]


def test_lazy_builds_on_first_use_once() -> None:
    built: list[int] = []

    class Service:
        def answer(self) -> int:
            return 42

    def build() -> Service:
        built.append(1)
        return Service()

    service = lazy(build)
    assert built == []  # nothing built until used
    assert service.answer() == 42 and service.answer() == 42
    assert built == [1]


# Issue 14: sends without a template never load the template modules; the first one with a
# template does. SendService with the in-memory fakes, in a fresh interpreter.
SENDS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from outpost.api.service import SendService
from tests.fakes.store import FakeDomains, FakeJobs, FakeMessages, FakeSuppressions
from tests.fakes.templates import FakeTemplates
from outpost.bootstrap import lazy

def templates():
    from outpost.templates.service import TemplateService
    t = TemplateService(FakeTemplates())
    t.create("hello", {"name": "h", "subject": "Hi {{n}}", "html": "<style>p{margin:0}</style><p>{{n}}</p>"})
    return t

api = SendService(store=FakeMessages(), suppressions=FakeSuppressions(), queue=FakeJobs(),
                  domains=FakeDomains("shop.test"), templates=lazy(templates))
from outpost.models import SendRequest
plain = {"from": "a@shop.test", "to": "b@x.test", "subject": "s", "html": "<p>x</p>"}
api.send_one(SendRequest.model_validate(plain))
api.send_batch([plain, plain])
wanted = ("pystache", "css_inline", "outpost.templates.mustache", "outpost.templates.text")
before = [m for m in wanted if m in sys.modules]
api.send_one(SendRequest.model_validate({"from": "a@shop.test", "to": "b@x.test", "template": "hello",
                                         "variables": {"n": 1}}))
after = [m for m in wanted if m in sys.modules]
print(json.dumps({"before": before, "after": after}))
"""


def test_templates_load_only_for_a_send_that_uses_one() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SENDS, str(ROOT)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen == {"before": [], "after": ["pystache", "css_inline", "outpost.templates.mustache",
                                            "outpost.templates.text"]}


def test_send_api_init_reads_the_compiled_texts_where_the_bytecode_layer_puts_them(tmp_path: Path) -> None:
    """app.py installs outpost/__pycache__/compiled-text.<tag>.marshal (code_cache.CACHE) first
    thing: a copy of the layer with the file built in place serves init's texts from it."""
    layer = tmp_path / "python"
    shutil.copytree(ROOT / "layers/outpost/outpost", layer / "outpost", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               PYTHONPATH=os.pathsep.join([str(layer), os.environ.get("PYTHONPATH", "")]), PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([sys.executable, "-c", "from outpost.code_cache import CACHE, build; build(CACHE)"], env=env,
                   cwd=ROOT, check=True, timeout=300)
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import app; from outpost import code_cache; "
             "print(json.dumps([code_cache.__file__, code_cache.stats]))")
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT / "functions/send_api")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, stats = json.loads(out.stdout.splitlines()[-1])
    assert where.startswith(str(layer))
    assert stats["hits"] > 1000 and stats["misses"] < stats["hits"] / 20


HANDLER_INIT = """
import gc, json
from outpost.cold_start import handler_init
seen = []
with handler_init():
    seen.append(gc.isenabled())
seen += [gc.isenabled(), gc.get_freeze_count() > 0]
gc.unfreeze()
try:
    with handler_init():
        raise ValueError("init failed")
except ValueError:
    seen += [gc.isenabled(), gc.get_freeze_count()]
print(json.dumps(seen))
"""


def test_handler_init_turns_collection_back_on_also_when_init_fails() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", HANDLER_INIT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # off inside; on and frozen after; after a failed init on again and nothing frozen
    assert json.loads(out.stdout) == [False, True, True, True, 0]
