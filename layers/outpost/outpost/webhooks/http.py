"""One webhook POST to an address ssrf.check_url chose: bounded in time and in what it reads.

  - the connection goes to `target.ip`; the host name travels only in SNI (verified against
    the certificate) and in Host (net.PinnedHttpsConnection);
  - DEADLINE (10 s) bounds everything, connect to last byte read, with net's watchdog: a
    server that trickles a byte every second cannot hold an attempt longer;
  - redirects are never followed (http.client does not): a 3xx is a failed attempt, whose
    Location is not fetched (it could name any address);
  - at most MAX_READ bytes of the answer are read, and EXCERPT characters of it are kept for
    the attempt's record: a 100 MB answer costs 64 KB.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import WebhookTransportError
from ..net import PinnedHttpsConnection
from .ssrf import Target

DEADLINE = 10.0  # seconds for a whole attempt (the "10 s timeout")
MAX_READ = 64 * 1024
EXCERPT = 200
USER_AGENT = "Outpost-Webhooks/1"


@dataclass(frozen=True)
class HttpAnswer:
    code: int
    excerpt: str
    duration_ms: int


class PinnedHttpConnection(PinnedHttpsConnection):
    """Plain HTTP to a chosen address with the same deadline watchdog (the local stack's
    http:// receivers on 127.0.0.0/8 only: ssrf.check_url refuses http elsewhere)."""

    def connect(self) -> None:
        self.sock = self._open_watched()


def post(target: Target, body: bytes, headers: Mapping[str, str], *, context: ssl.SSLContext,
         deadline: float = DEADLINE) -> HttpAnswer:
    """POST `body` to the target; the answer's code and an excerpt, or WebhookTransportError."""
    started = time.monotonic()
    cls = PinnedHttpsConnection if target.scheme == "https" else PinnedHttpConnection
    conn = cls(target.host, target.ip, target.port, context, deadline, started + deadline)
    default = 443 if target.scheme == "https" else 80
    host = target.host if target.port == default else f"{target.host}:{target.port}"
    try:
        conn.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
        for k, v in {"Host": host, "User-Agent": USER_AGENT, "Content-Type": "application/json",
                     "Content-Length": str(len(body)), **headers}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read(MAX_READ)
        code = resp.status
    except (OSError, http.client.HTTPException, ssl.SSLError, ValueError) as exc:
        late = conn.expired
        raise WebhookTransportError("timed out after 10 s" if late else f"{type(exc).__name__}: {exc}"[:300],
                                    timeout=late) from None
    finally:
        conn.close()
    text = data[:EXCERPT * 4].decode("utf-8", "replace")[:EXCERPT]
    return HttpAnswer(code, text, int((time.monotonic() - started) * 1000))
