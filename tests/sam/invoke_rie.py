"""Run each built function under the Lambda Runtime Interface Emulator and check its answers.

This is what `sam local invoke` does minus Docker: for every function in the built template,
start AWS's emulator (shipped inside aws-sam-cli) on loopback with `python -m awslambdaric`
as the runtime, the function's build directory as the task root (/var/task) and the layers'
build outputs merged as Lambda merges them into /opt (OutpostLayer, then OutpostBytecodeLayer's
__pycache__ directories) on PYTHONPATH (/opt/python), then POST the sample events from events/ and check
that each answer is the handler's own, not Runtime.ImportModuleError or a crash.

The functions' environment is the template's (Globals merged with the function's own
variables); every value that is an intrinsic (!Ref MessagesTable, ...) must come from the env
file the local provisioner wrote, so a template variable the provisioner does not know about
fails here instead of in AWS.

    python tests/sam/invoke_rie.py --build-dir .aws-sam/ci-x86_64/build \
        --env-file .aws-sam/ci-env --python .aws-sam/rie-venv/bin/python \
        --rie .venv/lib/python3.11/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64 \
        --endpoint http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

from outpost_local.lifecycle import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
OPT = "opt-python"  # beside the build directory: the functions' layers merged, as /opt/python


def assemble_opt(build_dir: Path, template: dict[str, Any]) -> Path:
    """/opt/python as Lambda assembles it: each layer of Globals.Function.Layers, in order."""
    opt = build_dir.parent / OPT
    shutil.rmtree(opt, ignore_errors=True)
    for ref in template["Globals"]["Function"]["Layers"]:
        layer = build_dir / template["Resources"][ref["Ref"]]["Properties"]["ContentUri"] / "python"
        shutil.copytree(layer, opt, dirs_exist_ok=True)
    return opt


@dataclass(frozen=True)
class Case:
    function: str  # logical ID in template.yaml
    event: str  # file in events/
    check: Callable[[Any], str | None]  # None when the answer is right, else what is wrong
    rewrite: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]] | None = None


def _lambda_error(answer: Any) -> str | None:
    if isinstance(answer, dict) and "errorType" in answer:
        return f"function error {answer['errorType']}: {answer.get('errorMessage', '')[:300]}"
    return None


def _http_status(*allowed: int) -> Callable[[Any], str | None]:
    def check(answer: Any) -> str | None:
        if err := _lambda_error(answer):
            return err
        if not isinstance(answer, dict) or answer.get("statusCode") not in allowed:
            return f"expected statusCode in {allowed}, got {str(answer)[:300]}"
        try:
            json.loads(answer.get("body") or "")
        except ValueError:
            return f"body is not JSON: {answer.get('body')!r:.300}"
        return None

    return check


def _no_batch_failures(answer: Any) -> str | None:
    if err := _lambda_error(answer):
        return err
    if answer != {"batchItemFailures": []}:
        return f'expected {{"batchItemFailures": []}}, got {str(answer)[:300]}'
    return None


def _handled(answer: Any) -> str | None:
    # The bounce processor's answer has no fixed shape; what matters is that the handler ran
    # and returned instead of raising (a raise would make SES / S3 retry the event).
    return _lambda_error(answer)


def _swept_nothing(answer: Any) -> str | None:
    if err := _lambda_error(answer):
        return err
    # (and an empty reputation evaluation: no scope counted on a fresh table)
    if answer != {"overdue": 0, "messages": 0, "failed": 0, "reputation_scopes": 0, "reputation_moved": 0,
                  "reputation_failed": 0}:
        return f"expected an empty sweep, got {str(answer)[:300]}"
    return None


def _into_local_bucket(event: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Point the sample S3 event at the provisioned bucket (and a key that is not there)."""
    for record in event["Records"]:
        record["s3"]["bucket"]["name"] = env["OUTPOST_BUCKET"]
        record["s3"]["bucket"]["arn"] = "arn:aws:s3:::" + env["OUTPOST_BUCKET"]
    return event


CASES = [
    # No API key: the API must refuse before touching anything.
    Case("SendApiFunction", "api_get_message.json", _http_status(401)),
    # A well-formed request with a key that was never issued.
    Case("SendApiFunction", "api_post_message.json", _http_status(401, 403)),
    # The same as an HTTP API sends it (ApiType=HTTP: payload format 1.0, lower-case headers).
    Case("SendApiFunction", "api_http_post_message.json", _http_status(401, 403)),
    # A job for a message id nobody stored: nothing can be delivered, so it is dropped (logged),
    # not reported as a failure that SQS would redeliver five times.
    Case("SenderFunction", "sqs_send.json", _no_batch_failures),
    # ObjectCreated for an object that is missing (deleted, or expired by the lifecycle rule).
    Case("BounceProcessorFunction", "s3_inbound.json", _handled, _into_local_bucket),
    # SES receipt for a message SES never stored in inbound/ses/.
    Case("BounceProcessorFunction", "ses_receipt.json", _handled),
    # The scheduled sweep on an empty table: queries the due index, queues nothing.
    Case("SweeperFunction", "schedule.json", _swept_nothing),
    # A recipient's change from MessagesTable's stream (recorded from DynamoDB Local): its
    # event goes to the event log; no record fails (issue 12).
    Case("EventsFunction", "dynamodb_stream_recipient.json", _no_batch_failures),
]


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise SystemExit(f"{path}: not KEY=VALUE: {line!r}")
            env[key.strip()] = value.strip()
    return env


def function_env(
    template: dict[str, Any], logical_id: str, provisioned: dict[str, str]
) -> dict[str, str]:
    """The function's variables per the template, intrinsics filled from the env file."""
    merged: dict[str, Any] = {}
    merged.update(
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    props = template["Resources"][logical_id]["Properties"]
    merged.update(props.get("Environment", {}).get("Variables", {}))
    out: dict[str, str] = {}
    unresolved = []
    for key, value in merged.items():
        if isinstance(value, str | int | float):
            out[key] = str(value)
        elif key in provisioned:
            out[key] = provisioned[key]
        else:
            unresolved.append(key)
    if unresolved:
        raise SystemExit(
            f"{logical_id}: the env file has no value for {', '.join(sorted(unresolved))}"
        )
    # The env file wins for everything else it sets too (endpoints, DNS server, ports).
    out.update(provisioned)
    return out


class Emulator:
    """One function under the RIE: a process group we own, stopped by its own id."""

    def __init__(
        self,
        *,
        rie: Path,
        python: Path,
        build_dir: Path,
        template: dict[str, Any],
        logical_id: str,
        provisioned: dict[str, str],
        endpoint: str,
        log_path: Path,
    ) -> None:
        props = template["Resources"][logical_id]["Properties"]
        globals_fn = template.get("Globals", {}).get("Function", {})
        task_root = build_dir / props["CodeUri"]
        layer_root = build_dir.parent / OPT  # assemble_opt's
        handler = props.get("Handler", globals_fn.get("Handler"))
        timeout = props.get("Timeout", globals_fn.get("Timeout", 3))
        memory = props.get("MemorySize", globals_fn.get("MemorySize", 128))
        self.port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "HOME": str(task_root),
            # As in Lambda: the task root first, then /opt/python (the layer), then the runtime.
            "PYTHONPATH": f"{task_root}:{layer_root}",
            "LAMBDA_TASK_ROOT": str(task_root),
            "AWS_LAMBDA_FUNCTION_NAME": logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": endpoint,
            **function_env(template, logical_id, provisioned),
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                [
                    str(rie),
                    "--runtime-interface-emulator-address",
                    f"127.0.0.1:{self.port}",
                    "--runtime-api-address",
                    f"127.0.0.1:{free_port()}",
                    str(python),
                    "-m",
                    "awslambdaric",
                    handler,
                ],
                cwd=task_root,
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            self._log.close()
            raise
        try:
            self._wait_listening()
        except RuntimeError:
            self.stop()
            raise

    def _wait_listening(self, timeout: float = 15.0) -> None:
        try:
            wait_port("127.0.0.1", self.port, timeout, self.proc, what="emulator")
        except TimeoutError as exc:
            raise RuntimeError(str(exc)) from None

    def invoke(self, event: dict[str, Any], timeout: float) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations",
            data=json.dumps(event).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            # The emulator answers 502 when the runtime dies, with the error document as body.
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise RuntimeError(f"emulator answered {exc.code}: {body[:300]!r}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def run(args: argparse.Namespace) -> int:
    build_dir = args.build_dir.resolve()
    template = yaml_parse((build_dir / "template.yaml").read_text())
    provisioned = read_env_file(args.env_file)
    assemble_opt(build_dir, template)
    failures = 0
    emulators: dict[str, Emulator] = {}
    try:
        for case in CASES:
            label = f"{case.function} <- events/{case.event}"
            started = time.monotonic()
            try:
                emu = emulators.get(case.function)
                if emu is None:
                    emu = emulators[case.function] = Emulator(
                        rie=args.rie,
                        python=args.python,
                        build_dir=build_dir,
                        template=template,
                        logical_id=case.function,
                        provisioned=provisioned,
                        endpoint=args.endpoint,
                        log_path=args.log_dir / f"{case.function}.log",
                    )
                event = json.loads((EVENTS / case.event).read_text())
                if case.rewrite:
                    event = case.rewrite(event, provisioned)
                answer = emu.invoke(event, timeout=args.timeout)
                problem = case.check(answer)
            except (OSError, RuntimeError, ValueError, urllib.error.URLError) as exc:
                answer, problem = None, f"{type(exc).__name__}: {exc}"
            took = time.monotonic() - started
            if problem is None:
                print(f"  ok    {label} ({took:.1f}s): {json.dumps(answer)[:160]}")
            else:
                failures += 1
                print(f"  FAIL  {label} ({took:.1f}s): {problem}")
                log = args.log_dir / f"{case.function}.log"
                if log.exists():
                    print("        last lines of " + str(log) + ":")
                    for line in log.read_text(errors="replace").splitlines()[-15:]:
                        print("        | " + line[:300])
    finally:
        for emu in emulators.values():
            emu.stop()
    print(f"{len(CASES) - failures}/{len(CASES)} invocations answered as expected")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, required=True)
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument(
        "--python", type=Path, required=True, help="python3.12 with awslambdaric and boto3"
    )
    parser.add_argument("--rie", type=Path, required=True)
    parser.add_argument("--endpoint", required=True, help="AWS endpoint (moto server)")
    parser.add_argument("--log-dir", type=Path, default=Path(".aws-sam"))
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    # The emulator runs in the function's directory, so relative paths must not reach it.
    args.python, args.rie = args.python.absolute(), args.rie.resolve()
    args.log_dir = args.log_dir.resolve()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
