"""How Outpost's network clients are built: the DNS resolver and the HTTPS connection.

  dns_resolver(nameservers, lifetime=..., cache=...)  a dnspython Resolver: through the given
                                                      servers (the local stack's), else the
                                                      system's; a cache or none, by caller
  https_client(ca_bundle, timeout=...)                an HttpsClient whose connect(host, ip, port,
                                                      deadline) opens a PinnedHttpsConnection

`bootstrap` builds one of each from the settings and hands them to the MX resolver, the domain
checks and the MTA-STS fetcher; what to ask and what to refuse stays with those callers (the
MTA-STS fetch resolves the policy host itself and pins the address it chose).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.nameserver
import dns.resolver

__all__ = ["HttpsClient", "PinnedHttpsConnection", "dns_resolver", "https_client", "tls_client_context"]


def dns_resolver(nameservers: Sequence[tuple[str, int]] = (), *, lifetime: float,
                 timeout: float | None = None, cache: bool) -> dns.resolver.Resolver:
    """A resolver through `nameservers` ((host, port) pairs), or the system's when empty.
    `lifetime` bounds one lookup, `timeout` (default: dnspython's) one server's answer; `cache`
    keeps answers for their TTL (delivery) or never (a user checking the records just fixed)."""
    if nameservers:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
    else:
        r = dns.resolver.Resolver()
    r.lifetime = lifetime
    if timeout is not None:
        r.timeout = timeout
    r.cache = dns.resolver.Cache() if cache else None
    return r


def tls_client_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context (TLS 1.2 or later), trusting `ca_bundle` instead of the
    system's store when given (the local stack's test CA)."""
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class HttpsClient:
    """Opens HTTPS connections to a chosen address, verifying the certificate for `host`."""

    context: ssl.SSLContext
    timeout: float  # per connect and per read

    def connect(self, host: str, ip: str, port: int, deadline: float) -> PinnedHttpsConnection:
        return PinnedHttpsConnection(host, ip, port, self.context, self.timeout, deadline)


def https_client(ca_bundle: str | None = None, *, timeout: float) -> HttpsClient:
    return HttpsClient(tls_client_context(ca_bundle), timeout)


class PinnedHttpsConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a given IP whose TLS handshake names (SNI) and verifies `host`.

    A watchdog timer shuts the socket down at `deadline` (a time.monotonic() value): a per-read
    timeout alone lets a server that sends one byte every few seconds hold the connection for
    hours. `cut` says whether it did; `expired` whether the deadline ended the exchange."""

    def __init__(self, host: str, ip: str, port: int, context: ssl.SSLContext, timeout: float,
                 deadline: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._read_timeout = timeout
        self._ip = ip
        self._context = context
        self._deadline = deadline
        self._live: socket.socket | None = None
        self._guard = threading.Lock()
        self._done = False
        self.cut = False
        self._watchdog: threading.Timer | None = None

    @property
    def expired(self) -> bool:
        """Cut by the watchdog, or so close to the deadline that the socket's own timeout
        (set to what was left) fired first: either way the deadline ended the fetch."""
        return self.cut or time.monotonic() >= self._deadline - 0.1

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.cut = True
            raise TimeoutError("HTTPS deadline exceeded")
        return left

    def _cut(self) -> None:
        with self._guard:
            if self._done or self._live is None:
                return
            self.cut = True
            try:
                # socket.socket's own shutdown, not SSLSocket's (which drops its SSL state):
                # a blocked read in another thread returns at once.
                socket.socket.shutdown(self._live, socket.SHUT_RDWR)
            except OSError:
                pass

    def _open_watched(self) -> socket.socket:
        """A TCP connection to the chosen address, under the deadline watchdog (which cuts it
        when the whole request's time is up)."""
        sock = socket.create_connection((self._ip, self.port), min(self._read_timeout, self._left()))
        with self._guard:
            self._live = sock
        self._watchdog = threading.Timer(self._left(), self._cut)
        self._watchdog.daemon = True
        self._watchdog.start()
        return sock

    def connect(self) -> None:
        sock = self._open_watched()
        tls = self._context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        with self._guard:
            self._live = tls
        self.sock = tls
        if self.cut:  # the watchdog fired on the raw socket between the two assignments
            raise TimeoutError("HTTPS deadline exceeded")
        tls.do_handshake()

    def close(self) -> None:
        with self._guard:
            self._done = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        super().close()
