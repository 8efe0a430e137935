"""schemathesis against the served /openapi.json on the local stack (real HTTP, real handler,
moto behind it): no input gets a 5xx, and every response matches the document (status code,
content type, body schema, headers).

`test_schemathesis_run_with_every_check` is the CLI run of issue 8, item 23:
`schemathesis run --checks all` (schema-valid requests accepted, schema-violating ones
refused, 405 with Allow for undeclared methods, ...) through all its phases, with the repo's
schemathesis.toml. Examples per operation are kept small so the file runs in a few minutes
under load; raise OUTPOST_SCHEMATHESIS_EXAMPLES for a longer hunt, and set
OUTPOST_SCHEMATHESIS_SEED to replay a run (the seed is fixed by default, so CI is repeatable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from api_rig import start_stack, stop_stack  # noqa: E402

EXAMPLES = int(os.environ.get("OUTPOST_SCHEMATHESIS_EXAMPLES", "20"))
CLI_EXAMPLES = int(os.environ.get("OUTPOST_SCHEMATHESIS_EXAMPLES", "10"))
SEED = os.environ.get("OUTPOST_SCHEMATHESIS_SEED", "8")
ROOT = Path(__file__).resolve().parents[2]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@pytest.fixture(scope="module")
def stack():
    # Generous throttling: the fuzzer must meet the handler, not the token bucket.
    st = start_stack("127.0.9", OUTPOST_API_RATE="10000", OUTPOST_API_BURST="10000")
    yield st
    stop_stack(st)


@pytest.fixture(scope="module")
def operations(stack):
    schema = schemathesis.openapi.from_url(f"{stack.api.url}/openapi.json")
    return {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}


# Driven by hand rather than with schema.parametrize(): schemathesis' pytest plugin does not run
# under pytest 9 yet, and the stack (hence the document) only exists once the fixture starts.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(stack, operations, mode):
    seen: dict[str, set[int]] = {}
    for name, op in sorted(operations.items()):
        _fuzz(stack, op, mode, seen.setdefault(name, set()))
    # Sanity: the fuzzer really reached the handler (not all 401s or 404s).
    assert len(seen) >= 12
    if mode is GenerationMode.POSITIVE:
        # Schema-valid sends reach the sender-domain check (403: the generated domains are not
        # verified); none is refused as invalid, as the document promises (issue 8, item 23).
        assert 200 in seen["GET /v1/messages"] and 403 in seen["POST /v1/messages"]
        assert 422 not in seen["POST /v1/messages"], seen["POST /v1/messages"]
    else:
        assert 422 in seen["POST /v1/messages"]


def _fuzz(stack, op, mode, codes: set[int]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.api_key}"},
            checks=CHECKS)
        codes.add(response.status_code)

    run()


def test_the_document_is_openapi_3_1_and_covers_the_api(stack):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{stack.api.url}/openapi.json", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/messages", "/v1/messages/batch", "/v1/messages/{message_id}", "/v1/bounces",
            "/v1/suppressions", "/v1/suppressions/{address}", "/v1/domains",
            "/v1/domains/{domain}", "/v1/domains/{domain}/rotate"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    send = doc["paths"]["/v1/messages"]["post"]
    assert send["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "SendRequest" in doc["components"]["schemas"]


@pytest.mark.timeout(600)
def test_schemathesis_run_with_every_check(stack, operations):
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists():
        pytest.skip("the schemathesis CLI is not installed next to this Python")
    started = time.monotonic()
    run = subprocess.run(
        [str(cli), "run", f"{stack.api.url}/openapi.json", "--checks", "all",
         "-H", f"Authorization: Bearer {stack.api_key}", "--max-examples", str(CLI_EXAMPLES),
         "--seed", SEED, "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=540)
    took = time.monotonic() - started
    summary = run.stdout[run.stdout.rfind("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-3000:]
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]
    # Sanity: every operation was tested and nothing failed.
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested and int(tested.group(1)) == len(operations), summary
    assert re.search(r"(\d+) generated, \1 passed", summary), summary
    print(f"\nschemathesis --checks all: {took:.0f} s\n{summary}")
