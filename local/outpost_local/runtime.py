"""Run the template's handlers in this process, the way Lambda would: same code, same env.

Each function module is loaded from its CodeUri by file path (every handler file is `app.py`,
so they get distinct module names), with a context object that has Lambda's methods.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .provision import Function


@dataclass
class LambdaContext:
    function_name: str
    timeout: int
    started: float
    aws_request_id: str
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout - time.time()) * 1000))


class Gate:
    """Whether a function may run now. Every stack in a process shares `os.environ` and
    bootstrap's cached clients and settings; while another stack holds them (a test's own
    stack, tests/integration/api_rig.py), this stack's functions would read and write that
    stack's tables and queues. `close` waits for the invocations running to end and holds new
    ones until `open` (their event sources poll nothing meanwhile: events wait where they are)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open, self._running = True, 0

    @property
    def is_open(self) -> bool:
        return self._open

    def enter(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._open)
            self._running += 1

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._cond.wait_for(lambda: self._running == 0)

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


_functions: weakref.WeakSet[LocalFunction] = weakref.WeakSet()  # every LocalFunction made here


def pause_functions() -> list[LocalFunction]:
    """Close the gate of every function of every stack in this process (before another stack
    takes os.environ and bootstrap's caches); returns those closed here, for `resume_functions`."""
    paused = [f for f in list(_functions) if f.gate.is_open]
    for f in paused:
        f.gate.close()
    return paused


def resume_functions(paused: list[LocalFunction]) -> None:
    """Open the gates `pause_functions` closed (once their stack's environment is back)."""
    for f in paused:
        f.gate.open()


@contextlib.contextmanager
def functions_paused() -> Iterator[None]:
    """Every stack's functions paused while a test changes os.environ and drops bootstrap's
    caches without a stack of its own (r17: tests/unit's environment fixtures did so while the
    session stack ran, whose background invocations then built clients and settings from that
    environment and kept them). bootstrap's caches are dropped again before they resume, once
    the caller has put the environment back."""
    from outpost import bootstrap

    paused = pause_functions()
    try:
        yield
    finally:
        bootstrap.reset()
        resume_functions(paused)


class LocalFunction:
    """One 'container': the module is imported once (cold start), invocations are serialised."""

    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self._module: Any = None
        self._lock = threading.Lock()
        self.gate = Gate()
        _functions.add(self)

    def _load(self) -> Any:
        if self._module is None:
            path = self.fn.code_uri / (self.fn.handler.split(".")[0] + ".py")
            name = f"outpost_fn_{self.fn.logical_id}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self._module = module
        return self._module

    def load(self) -> None:
        """Import the handler now (a cold start ahead of the first event)."""
        with self._lock:
            self._load()

    def invoke(self, event: dict) -> Any:
        self.gate.enter()  # held while another stack has the process's environment (Gate)
        try:
            with self._lock:
                module = self._load()
                handler = getattr(module, self.fn.handler.split(".", 1)[1])
                ctx = LambdaContext(self.fn.logical_id, self.fn.timeout, time.time(), str(uuid.uuid4()))
                return handler(event, ctx)
        finally:
            self.gate.leave()
