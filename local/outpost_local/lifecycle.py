"""What every local server shares: a free port, waiting for a listener, `with` = start/stop.

  free_port(host)                      a TCP port free on `host` right now
  wait_port(host, port, timeout, ...)  until something accepts on host:port (and, with
                                       `banner`, greets with it); fails fast if `proc` exits
  stop_process(proc, grace)            SIGTERM, then SIGKILL after `grace` seconds
  Server                               `with server:` starts it and stops it, whatever happens;
                                       start() runs _start() and stops what it began if it fails

Used by the local stack's servers, the test rigs, the SAM emulator check and the benches, so a
fix to the wait (a timeout, an exited process) reaches every one of them.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType
from typing import Self


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (for servers that need a fixed number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, *,
              banner: bytes | None = None, what: str = "") -> None:
    """Return once host:port accepts a connection (and sends a line starting with `banner`,
    when given: an SMTP server's 220 comes after its port opens). RuntimeError when `proc`
    exits first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or 'process'} for {host}:{port} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if banner is None:
                    return
                s.settimeout(5)
                if s.recv(512).startswith(banner):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what or 'nothing'} {'did not answer' if what else 'listens'} on {host}:{port} "
                       f"after {timeout}s")


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """Terminate `proc` and reap it: SIGTERM, then SIGKILL when it has not exited in `grace` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Server:
    """`with server: ...` runs start() and, however the block ends, stop().

    A server either overrides start() or implements _start(): then start() stops whatever
    _start() had begun when it fails (stop() must cope with a half-started server)."""

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
