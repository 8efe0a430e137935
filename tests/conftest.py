"""Shared fixtures: a whole local stack on its own loopback addresses and free ports."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


class Api:
    """A tiny HTTP client for the local stack's API (real HTTP over loopback)."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             key: str | None = "default", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        token = self.key if key == "default" else key
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text) if text else None
            except ValueError:
                return e.code, text.decode(errors="replace")

    def wait_for(self, message_id: str, done: Callable[[dict], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            status, body = self.call("GET", f"/v1/messages/{message_id}")
            assert status == 200, body
            if done(body):
                return body
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting on {message_id}: {json.dumps(body, indent=1)}")


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Any]:
    """One embedded local stack for the session: moto, DynamoDB Local, DNS, test CA, MX hosts (and Postfix as
    root), the inbound listener, the API and the SQS poller, all on 127.0.2.x and free ports."""
    from outpost_local.stack import LocalStack, StackConfig

    # Every test shares this stack and its sending domain: the complaint tests' reports would
    # pause that domain's sending (the reputation breaker, correctly: 2 complaints in 236 sends
    # is 0.85%, over the 0.5% pause) and fail whatever sends after them. The breaker gets its
    # own stack and thresholds in test_api_reputation.py; here it needs a volume never reached.
    stack = LocalStack(StackConfig(ip_prefix="127.0.2", api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                   smtp_port=0, retry_schedule="1,2,4,8", submission_port=0,
                                   submission_tls_port=0, env={"OUTPOST_REPUTATION_MIN_VOLUME": "1000000000"},
                                   # its bounce tests drop mail in inbound/s3/ and invoke the processor
                                   # themselves, to read its answer (the sandbox's tests have their own stack)
                                   s3_notifications=False))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def api(local_stack: Any) -> Api:
    return Api(local_stack.api.url, local_stack.api_key)


def _mx_hosts() -> Iterator[Callable[..., Any]]:
    from outpost_local.mx import MxServer

    started: list[MxServer] = []

    def make(*args: Any, **kwargs: Any) -> MxServer:
        server = MxServer(*args, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def mx_factory() -> Iterator[Callable[..., Any]]:
    """Start scriptable MX hosts (outpost_local.mx.MxServer) for a test; all are stopped when it
    ends. Used by tests/integration and tests/local_stack."""
    yield from _mx_hosts()


@pytest.fixture(scope="module")
def mx_factory_module() -> Iterator[Callable[..., Any]]:
    """mx_factory for a module's fixtures: the hosts stop when the module's tests end."""
    yield from _mx_hosts()


@pytest.fixture
def stacks_paused() -> Iterator[None]:
    """For a test that changes os.environ and drops bootstrap's caches without a stack of its own:
    every local stack in the process runs nothing meanwhile (outpost_local.runtime.functions_paused).
    Ask for it before monkeypatch, so that it ends after monkeypatch has put the environment back."""
    from outpost_local.runtime import functions_paused

    with functions_paused():
        yield
