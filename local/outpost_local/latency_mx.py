"""An MX host at internet distance: a real SMTP server on loopback whose replies arrive one
round trip (100-300 ms, fixed or jittered) after the client's command, as across the internet.

`LatencyProxy` is the network: a TCP relay on `host:port` in front of any SMTP server (an
`outpost_local.mx.MxServer`, or Postfix) that passes the client's bytes on at once and holds
every byte the server sends for one round trip, stamped when the server wrote it. That is how a
network delays a reply, and not how a server that sleeps before each reply does: replies the
server writes back to back (to a pipelined RSET+MAIL+RCPT+DATA, RFC 2920) arrive back to back,
one RTT after the group was sent, while a serial dialogue pays one RTT per command. Bytes keep
their order (a later write is never released before an earlier one). Everything goes through
it: the greeting (which waits two RTTs, the TCP handshake's and its own), EHLO, STARTTLS, the
TLS handshake's flights (the relay is below TLS; the certificate the client verifies is the
server's own), MAIL, RCPT, DATA, the end of data, QUIT. A round trip ("flight") is counted each
time the server answers after the client last spoke: `flights` is the number of round trips the
client waited for, the figure PIPELINING cuts. With `jitter`, each flight's delay is drawn
uniformly from delay ± jitter. `max_active` records the most connections open at once.

`LatencyMx` is the usual case: an MxServer (aiosmtpd: PIPELINING, STARTTLS with the test CA,
scriptable behaviours) on 127.0.0.1, port 0, behind a LatencyProxy on `host:port`;
`pipelining=False` makes the server leave PIPELINING out of its EHLO reply (a server without
it must still get mail, serially). The relay and the server run on their own event loops in
threads of this process, or, for a benchmark, in a process of their own (bench/latency.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

from .lifecycle import Server
from .mx import Behaviour, MxServer, MxSmtp, serve_in_thread

__all__ = ["LatencyMx", "LatencyProxy"]


class _Relay:
    """One client connection's relay: client -> server at once, server -> client delayed."""

    def __init__(self, proxy: LatencyProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 server: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client_r, self.client_w = client
        self.server_r, self.server_w = server
        self.client_spoke = True  # the connect itself: the greeting is the first flight
        self.first = True
        self.release = 0.0  # when the last byte sent to the client is released (loop time)
        self.delay = proxy.delay
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def up(self) -> None:
        """The client's bytes, to the server at once."""
        try:
            while data := await self.client_r.read(65536):
                self.client_spoke = True
                self.server_w.write(data)
                await self.server_w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.server_w.close()

    async def down(self) -> None:
        """The server's bytes, stamped with their release time (one RTT after they were written)."""
        loop = asyncio.get_running_loop()
        try:
            while data := await self.server_r.read(65536):
                if self.client_spoke:
                    # A new round trip: the server answers what the client last sent.
                    self.client_spoke = False
                    self.proxy._flight()
                    self.delay = self.proxy._draw() * (2 if self.first else 1)
                    self.first = False
                self.release = max(self.release, loop.time() + self.delay)
                self.queue.put_nowait((self.release, data))
        except (ConnectionError, OSError):
            pass
        finally:
            self.queue.put_nowait((self.release, None))

    async def deliver(self) -> None:
        """The delay line: each piece written to the client at its release time, in order."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                at, data = await self.queue.get()
                if at > loop.time():
                    await asyncio.sleep(at - loop.time())
                if data is None:
                    break
                self.client_w.write(data)
                await self.client_w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.client_w.close()
            with contextlib.suppress(Exception):
                self.server_w.close()


class LatencyProxy(Server):
    """A TCP relay on `host:port` (0: a free port, see `.port`) to `backend` (host, port) that
    delays what the server sends by `delay` seconds (± `jitter`) per round trip."""

    def __init__(self, host: str, port: int, backend: tuple[str, int], *, delay: float = 0.2,
                 jitter: float = 0.0, seed: int | None = None) -> None:
        self.host, self.port, self.backend = host, port, backend
        self.delay, self.jitter = delay, jitter
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.flights = 0  # round trips the clients waited for (server answers after the client spoke)
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def _draw(self) -> float:
        return max(0.0, self.delay + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0))

    def _flight(self) -> None:
        with self._lock:
            self.flights += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"flights": self.flights, "connections": self.connections, "active": self.active,
                    "max_active": self.max_active}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server = await asyncio.open_connection(*self.backend)
        except OSError:
            writer.close()
            return
        with self._lock:
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        relay = _Relay(self, (reader, writer), server)
        try:
            await asyncio.gather(relay.up(), relay.down(), relay.deliver())
        except asyncio.CancelledError:
            # The relay stopping under a live connection. Ending the task normally: Python
            # 3.11's start_server callback asks a cancelled task for its exception, which
            # raises, and asyncio logged that as an error with a traceback (3.12 checks first).
            writer.close()
        finally:
            with self._lock:
                self.active -= 1

    def _start(self) -> None:
        self._loop, server, self._thread = serve_in_thread(
            lambda _: asyncio.start_server(self._serve, self.host, self.port, backlog=1024),
            f"latency-{self.host}")
        self._server, self.port = server, server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, server = self._loop, self._server

        def shutdown() -> None:
            if server is not None:
                server.close()
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)
        self._thread = None


class _NoPipelining:
    """aiosmtpd's EHLO hook with PIPELINING left out of the reply."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    async def __call__(self, *args: Any) -> list[str]:
        lines = [line[4:] for line in await self.hook(*args) if line[4:] != "PIPELINING"]
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]


class _Backend(MxServer):
    def __init__(self, *args: Any, pipelining: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipelining = pipelining

    def _factory(self) -> MxSmtp:
        proto = super()._factory()
        if not self.pipelining:
            proto._handle_hooks["EHLO"] = _NoPipelining(proto._handle_hooks["EHLO"])
        return proto


class LatencyMx(Server):
    """A scriptable MX host (`MxServer`: `behaviour`, `tls_context`, `hostname`, ...) reached at
    `host:port` through a LatencyProxy of `delay` ± `jitter` seconds per round trip. `.mx` is the
    server (received mail, transcript), `.proxy` the network (flights, max_active)."""

    def __init__(self, host: str, port: int, behaviour: Behaviour | Sequence[Behaviour] | None = None,
                 tls_context: ssl.SSLContext | None = None, hostname: str = "mx.test", *,
                 delay: float = 0.2, jitter: float = 0.0, pipelining: bool = True, seed: int | None = None,
                 **mx_options: Any) -> None:
        self.mx = _Backend("127.0.0.1", 0, behaviour, tls_context, hostname, pipelining=pipelining,
                           **mx_options)
        self.host, self.port = host, port
        self._proxy_options = {"delay": delay, "jitter": jitter, "seed": seed}
        self.proxy: LatencyProxy | None = None

    def _start(self) -> None:
        self.mx.start()
        self.proxy = LatencyProxy(self.host, self.port, ("127.0.0.1", self.mx.port),
                                  **self._proxy_options).start()  # type: ignore[arg-type]
        self.port = self.proxy.port

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.mx.stop()

    @property
    def flights(self) -> int:
        return self.proxy.flights if self.proxy is not None else 0

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        return self.mx.wait_for(count, timeout)


def measure_rtt(host: str, port: int, *, tries: int = 3) -> float:
    """The greeting's wait on a fresh connection (two RTTs through a LatencyProxy), best of
    `tries`: a quick check that the proxy delays what it should."""
    import socket

    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        with socket.create_connection((host, port), timeout=10) as s:
            s.recv(1024)
        best = min(best, time.perf_counter() - t)
    return best


def show_pipelining(pki: Any, host: str = "127.0.0.61", rtt: float = 0.1) -> bool:
    """`make demo`'s step: three messages on one verified-TLS session to an MX `rtt` seconds
    away, with PIPELINING and without; prints the round trips and time per reused message."""
    import asyncio

    from outpost.delivery.transport import SmtpConnector

    name = "mx.far-away.test"
    body = b"From: hello@demo.test\r\nTo: user@far-away.test\r\nSubject: PIPELINING\r\n\r\nHi.\r\n"
    with LatencyMx(host, 0, None, pki.server_context(name), name, delay=rtt) as mx:
        async def per_message(pipelining: bool) -> tuple[int, float]:
            c = SmtpConnector("mta.demo.test", port=mx.port, ca_bundle=str(pki.ca_bundle), pipelining=pipelining)
            s = await c.open(name, host, "verify")
            await s.send("bounce@demo.test", "user0@far-away.test", body)
            f, t = mx.flights, time.perf_counter()
            for i in (1, 2):
                await s.send("bounce@demo.test", f"user{i}@far-away.test", body)
            await s.close()
            return (mx.flights - f) // 2, (time.perf_counter() - t) / 2

        piped, serial = asyncio.run(per_message(True)), asyncio.run(per_message(False))
    print(f"\nPIPELINING (RFC 2920) to an MX {rtt * 1000:.0f} ms away (verified TLS, a reused session): "
          f"{piped[0]} round trips and {piped[1]:.2f} s per message; without it {serial[0]} and {serial[1]:.2f} s")
    return piped[0] < serial[0]
