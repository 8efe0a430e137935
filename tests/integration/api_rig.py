"""Shared by the API's integration tests: an isolated local stack (127.0.8.x, ports chosen by
the OS) and a small HTTP client. Not a test module: pytest does not collect it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from outpost_local.runtime import LocalFunction, pause_functions, resume_functions
from outpost_local.stack import LocalStack, StackConfig


def reset_caches() -> None:
    """Forget clients and settings cached by an earlier stack in this process (other ports)."""
    from outpost import bootstrap

    bootstrap.reset()


_saved_env: dict[int, dict[str, str]] = {}
_paused: dict[int, list[LocalFunction]] = {}


def start_stack(prefix: str = "127.0.8", **env: str) -> LocalStack:
    # The stacks already up in this process (the session's) run nothing while this one holds
    # os.environ and bootstrap's caches: their sweeper timer, pollers and listeners would
    # otherwise invoke their functions on this stack's tables and queues (runtime.Gate).
    paused = pause_functions()
    saved = dict(os.environ)
    reset_caches()
    # The test's settings from the start: functions cold-started by the stack (the sweeper,
    # and the reputation breaker it builds) read them then.
    try:
        stack = LocalStack(StackConfig(ip_prefix=prefix, api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                       smtp_port=0, postfix=False, env=dict(env))).start()
    except BaseException:
        os.environ.clear()
        os.environ.update(saved)
        reset_caches()
        resume_functions(paused)
        raise
    # What the template gives a deployed stack and the local one cannot resolve: the sender's IP.
    os.environ.update({"OUTPOST_SENDER_IP": stack.config.ip(1), **env})
    stack.env.update({"OUTPOST_SENDER_IP": stack.config.ip(1), **env})
    from outpost import config

    config.settings.cache_clear()
    _saved_env[id(stack)] = saved
    _paused[id(stack)] = paused
    return stack


def stop_stack(stack: LocalStack) -> None:
    """Stop it and leave the process as it was: the environment and no cached clients that
    point at this stack's (now gone) endpoints, for whatever test runs next."""
    stack.stop()
    saved = _saved_env.pop(id(stack), None)
    if saved is not None:
        os.environ.clear()
        os.environ.update(saved)
    reset_caches()
    resume_functions(_paused.pop(id(stack), []))  # their environment is back


def call(stack: LocalStack, method: str, path: str, body: Any = None, *, key: str | None = None,
         headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, dict, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None or stack.api_key:
        h["Authorization"] = f"Bearer {key if key is not None else stack.api_key}"
    req = urllib.request.Request(stack.api.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")
