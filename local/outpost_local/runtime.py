"""Run the template's handlers in this process, the way Lambda would: same code, same env.

Each function module is loaded from its CodeUri by file path (every handler file is `app.py`,
so they get distinct module names), with a context object that has Lambda's methods.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
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


class LocalFunction:
    """One 'container': the module is imported once (cold start), invocations are serialised."""

    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self._module: Any = None
        self._lock = threading.Lock()

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
        with self._lock:
            module = self._load()
            handler = getattr(module, self.fn.handler.split(".", 1)[1])
            ctx = LambdaContext(self.fn.logical_id, self.fn.timeout, time.time(), str(uuid.uuid4()))
            return handler(event, ctx)
