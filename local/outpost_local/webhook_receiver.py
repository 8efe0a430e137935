"""A local webhook receiver: an HTTP server on a 127.0.0.x address that verifies each POST's
Standard Webhooks signature with the independent `standardwebhooks` package (never Outpost's
own code), records it and, with `echo`, prints it. `make dev` runs one (and prints the curl
line that registers it); `make demo` and the tests use it as the far end of a webhook.

Scriptable like the MX hosts, to play the endpoints a dispatcher meets:
  status      the code it answers (200), or a callable(request) -> code
  fail_ratio  answer 500 this often (a seeded RNG), at most `max_failures` times per webhook-id
  delay       seconds to wait before answering (a slow endpoint; `hang` never answers)
  redirect_to answer 302 with this Location
  body_bytes  answer with this many bytes of body (a 100 MB answer), streamed; with
              `stall_after`, it stops sending after that many bytes and holds the connection
              (a client that reads the whole answer waits for ever)
`stop()` then `start()` takes it down and brings it back on the same address and port.

Secrets: `secrets` (set by a test from the 201 answer), or `secrets_for()`, a callable giving
the current ones (make dev reads them from the local webhooks table: the user registers the
receiver with curl, and the receiver can verify at once).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .lifecycle import Server

MAX_BODY = 1024 * 1024


@dataclass
class Received:
    """One POST as the receiver saw it."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool | None  # None: no secret to check with
    error: str | None
    answered: int
    at: float
    path: str

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver(Server):
    host: str = "127.0.0.1"
    port: int = 0
    status: int | Callable[[Received], int] = 200
    fail_ratio: float = 0.0
    max_failures: int = 4
    delay: float = 0.0
    hang: bool = False
    redirect_to: str | None = None
    body_bytes: int = 0
    stall_after: int | None = None
    secrets: list[str] = field(default_factory=list)
    secrets_for: Callable[[], list[str]] | None = None
    echo: bool = False
    seed: int = 12

    def __post_init__(self) -> None:
        self.received: list[Received] = []
        self.failures: Counter[str] = Counter()
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()  # frees hung requests at stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    # ---- what it saw ---------------------------------------------------------------------------
    def accepted(self) -> list[Received]:
        """The POSTs it answered 2xx (a delivery), in order."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def accepted_ids(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.accepted())

    # ---- life cycle ----------------------------------------------------------------------------
    def _start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self._release.clear()
        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"webhooks-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    # ---- one request ---------------------------------------------------------------------------
    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool | None, str | None]:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        secrets = list(self.secrets) or (self.secrets_for() if self.secrets_for else [])
        if not secrets:
            return None, "no secret to verify with"
        error = None
        for secret in secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True, None
            except (WebhookVerificationError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        return False, error

    def _answer_for(self, r: Received) -> int:
        if self.redirect_to:
            return 302
        code = self.status(r) if callable(self.status) else self.status
        with self._lock:
            if 200 <= code < 300 and self.fail_ratio and self.failures[r.webhook_id] < self.max_failures \
                    and self._rng.random() < self.fail_ratio:
                self.failures[r.webhook_id] += 1
                return 500
        return code

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = min(int(h.headers.get("Content-Length") or 0), MAX_BODY)
        body = h.rfile.read(length)
        headers = {k.lower(): v for k, v in h.headers.items()}
        verified, error = self._verify(body, headers)
        r = Received(headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""),
                     headers.get("webhook-signature", ""), body, verified, error, 0, time.time(), h.path)
        if self.hang:
            self._release.wait(600)
            return
        if self.delay:
            self._release.wait(self.delay)
        r.answered = self._answer_for(r)
        with self._lock:
            self.received.append(r)
        if self.echo:
            self._print(r)
        self._reply(h, r.answered)

    def _reply(self, h: BaseHTTPRequestHandler, code: int) -> None:
        try:
            h.send_response(code)
            if code == 302:
                h.send_header("Location", str(self.redirect_to))
            size = self.body_bytes or 2
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(size))
            h.end_headers()
            if not self.body_bytes:
                h.wfile.write(b"{}")
                return
            chunk = b"x" * 65536
            left = size
            while left > 0 and not self._release.is_set():
                if self.stall_after is not None and size - left >= self.stall_after:
                    self._release.wait(600)
                    return
                n = min(left, len(chunk))
                h.wfile.write(chunk[:n])
                left -= n
                with self._lock:
                    self.bytes_sent += n
        except OSError:
            h.close_connection = True  # the client went away (a capped read closes early)

    @staticmethod
    def _print(r: Received) -> None:
        try:
            p = r.payload
            data = p.get("data", {})
            what = f"{p.get('type')} {data.get('recipient', '')} (message {data.get('message_id', '')})"
        except (ValueError, AttributeError):
            what = f"{len(r.body)} bytes, not JSON"
        check = {True: "signature verified (standardwebhooks)", False: f"signature INVALID: {r.error}",
                 None: "not verified: no secret"}[r.verified]
        print(f"[webhook] {r.webhook_id} {what}: {check}; answered {r.answered}", flush=True)
