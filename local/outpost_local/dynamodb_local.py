"""AWS's own DynamoDB Local as the local stack's DynamoDB engine (moto keeps the other services).

moto's DynamoDB does not make a conditional write atomic across simultaneous requests (3 double
claims in 40 same-instant races were measured), so a concurrency test that passes on it proves
little. DynamoDB Local is AWS's engine (SQLite underneath, transactions, atomic conditional
writes); it ships as `emulator/DynamoDBLocal.jar` plus native sqlite4java libraries inside the
npm package `amplify-dynamodb-simulator`, and runs on Debian's OpenJDK 17.

  install()        `npm pack` of the pinned version into .local-aws/ (ignored by git), checked
                   against the registry's sha512, only the emulator kept; then the loopback
                   launcher (java/LoopbackDynamoDbLocal.java) compiled when javac exists
  DynamoDbLocal    one in-memory server process on a loopback address
  choose_engine()  which engine the stack runs, and why (OUTPOST_DYNAMODB_ENGINE=local|moto|auto)

DynamoDB Local's command line has no bind address (Jetty listens on every interface); the
launcher binds it to the address asked for. Without javac the stock runner is used and a
warning says it listens on all interfaces.

Differences from DynamoDB that matter here: TTL is accepted (UpdateTimeToLive) but items never
expire; there are no throttling errors; with -inMemory nothing survives a restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .lifecycle import free_port, stop_process, wait_port

log = logging.getLogger("outpost_local")

PACKAGE = "amplify-dynamodb-simulator"
PACKAGE_VERSION = "2.9.30"  # bundles DynamoDB Local 1.25.1 (emulator/README.txt)
PACKAGE_INTEGRITY = ("sha512-xTeeRLvzEfqyd5lh3bH4c0kHvSHHmmhD5ZDsHFKAQ5g2Zl6JqlFdutaQhCLHzx"
                     "Ep6Ry1o7TB6niIoXuQAnSewQ==")  # `npm view amplify-dynamodb-simulator@2.9.30 dist.integrity`
ENGINE_VERSION = "1.25.1"
ENGINE_LOCAL = f"DynamoDB Local {ENGINE_VERSION}"
ENGINE_MOTO = "moto"

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_SOURCE = Path(__file__).resolve().parent / "java" / "LoopbackDynamoDbLocal.java"
LAUNCHER_CLASS = "LoopbackDynamoDbLocal"
START_TIMEOUT = 120.0  # the JVM starts in 2-4 s idle, 15 s and more on a loaded 2-core machine


def home() -> Path:
    return Path(os.environ.get("OUTPOST_LOCAL_AWS_DIR") or ROOT / ".local-aws")


def emulator_dir() -> Path:
    return home() / f"{PACKAGE}-{PACKAGE_VERSION}" / "emulator"


def launcher_dir() -> Path:
    return home() / f"{PACKAGE}-{PACKAGE_VERSION}" / "launcher"


def installed() -> bool:
    return (emulator_dir() / "DynamoDBLocal.jar").is_file()


def _integrity(path: Path) -> str:
    h = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def install(*, quiet: bool = False) -> str | None:
    """Install the pinned DynamoDB Local under .local-aws/; None when done (or already there),
    else the reason it could not be (no npm, no java, a failed download)."""
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, flush=True))
    if shutil.which("java") is None:
        return "no java on PATH (Debian: apt-get install openjdk-17-jdk-headless)"
    if not installed():
        npm = shutil.which("npm")
        if npm is None:
            return "no npm on PATH (Debian: apt-get install npm)"
        say(f"installing {ENGINE_LOCAL} ({PACKAGE}@{PACKAGE_VERSION} from npm) into {home()}")
        target = emulator_dir().parent
        with tempfile.TemporaryDirectory(prefix="ddblocal-") as tmp:
            # `npm pack` fetches exactly the pinned tarball (npm checks the registry's integrity
            # on the way); only the emulator is used, so the wrapper's Node dependencies
            # (the Amplify CLI core, the AWS SDK) are not installed.
            r = subprocess.run([npm, "pack", "--silent", f"{PACKAGE}@{PACKAGE_VERSION}"], cwd=tmp,
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                return f"npm pack failed: {(r.stderr or r.stdout).strip()[-500:]}"
            tgz = Path(tmp) / f"{PACKAGE}-{PACKAGE_VERSION}.tgz"
            if _integrity(tgz) != PACKAGE_INTEGRITY:
                return f"{tgz.name}: integrity mismatch (expected {PACKAGE_INTEGRITY})"
            staging = Path(tmp) / "out"
            with tarfile.open(tgz) as tar:
                members = [m for m in tar.getmembers()
                           if m.name.startswith("package/emulator/") and (m.isfile() or m.isdir())]
                tar.extractall(staging, members=members, filter="data")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            (staging / "package" / "emulator").rename(emulator_dir())
    if not _launcher_ready():
        reason = _compile_launcher()
        if reason:
            say(f"note: {reason}; DynamoDB Local will listen on all interfaces")
    return None


def _launcher_ready() -> bool:
    cls = launcher_dir() / f"{LAUNCHER_CLASS}.class"
    return cls.is_file() and cls.stat().st_mtime >= LAUNCHER_SOURCE.stat().st_mtime


def _compile_launcher() -> str | None:
    javac = shutil.which("javac")
    if javac is None:
        return "no javac (openjdk-17-jdk-headless) to build the loopback launcher"
    launcher_dir().mkdir(parents=True, exist_ok=True)
    r = subprocess.run([javac, "-nowarn", "-cp", str(emulator_dir() / "DynamoDBLocal.jar"),
                        "-d", str(launcher_dir()), str(LAUNCHER_SOURCE)],
                       capture_output=True, text=True, timeout=300)
    return None if r.returncode == 0 else f"javac failed: {r.stderr.strip()[-500:]}"


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # ENGINE_LOCAL or ENGINE_MOTO
    reason: str


def choose_engine() -> EngineChoice:
    """OUTPOST_DYNAMODB_ENGINE: `local` (DynamoDB Local or fail), `moto`, or `auto` (the
    default: DynamoDB Local when Java and the installed package are there, else moto)."""
    wanted = os.environ.get("OUTPOST_DYNAMODB_ENGINE", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "local", "moto"):
        raise ValueError(f"OUTPOST_DYNAMODB_ENGINE={wanted!r}: use local, moto or auto")
    if wanted == "moto":
        return EngineChoice(ENGINE_MOTO, "OUTPOST_DYNAMODB_ENGINE=moto")
    missing = None
    if shutil.which("java") is None:
        missing = "no java on PATH"
    elif not installed():
        missing = f"not installed in {home()} (make install, with npm)"
    if missing is None:
        return EngineChoice(ENGINE_LOCAL, f"{PACKAGE}@{PACKAGE_VERSION} in {home()}")
    if wanted == "local":
        raise RuntimeError(f"OUTPOST_DYNAMODB_ENGINE=local but DynamoDB Local is unavailable: {missing}")
    return EngineChoice(ENGINE_MOTO, f"fallback: DynamoDB Local unavailable ({missing})")


class DynamoDbLocal:
    """One DynamoDB Local process, in memory, on `host:port` (a loopback address)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proc: subprocess.Popen | None = None
        self.started_in: float = 0.0  # seconds from exec to the first answered request
        self.loopback_only = _launcher_ready()
        self._cwd: str | None = None
        self._log = Path(os.devnull)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        emu = emulator_dir()
        java = shutil.which("java") or "java"
        # Start-up flags: a small heap and the C1 compiler only start the JVM fastest; the
        # tables the tests keep are tiny.
        jvm = [java, "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               f"-Djava.library.path={emu / 'DynamoDBLocal_lib'}"]
        args = ["-inMemory", "-port", str(self.port), "-disableTelemetry"]
        if self.loopback_only:
            cp = os.pathsep.join([str(emu / "DynamoDBLocal.jar"), str(launcher_dir())])
            return [*jvm, "-cp", cp, LAUNCHER_CLASS, self.host, *args]
        return [*jvm, "-jar", str(emu / "DynamoDBLocal.jar"), *args]

    def start(self, timeout: float = START_TIMEOUT) -> DynamoDbLocal:
        if not installed():
            raise RuntimeError(f"DynamoDB Local is not installed in {home()}")
        if not self.loopback_only:
            log.warning("DynamoDB Local listens on all interfaces (no loopback launcher: install javac)")
        self._cwd = tempfile.mkdtemp(prefix="ddblocal-run-")  # it may write logs to its cwd
        t0 = time.monotonic()
        self._log = Path(self._cwd) / "dynamodb-local.log"
        with self._log.open("wb") as out:  # a file, not a pipe: nothing can block on a full pipe
            self.proc = subprocess.Popen(self.command(), cwd=self._cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        import urllib.error
        import urllib.request

        # Ready = it answers a DynamoDB API call (the port opens a little before that).
        req = urllib.request.Request(self.endpoint, data=b"{}", method="POST", headers={
            "X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self._log.read_text(errors="replace") if self._log.exists() else ""
                raise RuntimeError(f"DynamoDB Local exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    r.read()
                    return
            except urllib.error.HTTPError:
                return  # it answered (an auth or validation error is still an answer)
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"DynamoDB Local did not answer on {self.endpoint} within the start timeout")

    def rss_bytes(self) -> int:
        """Resident memory of the Java process (Linux /proc), 0 when not running."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15)
            self.proc = None
        if self._cwd:
            shutil.rmtree(self._cwd, ignore_errors=True)
            self._cwd = None


@contextlib.contextmanager
def with_moto(host: str) -> Iterator[tuple[DynamoDbLocal, subprocess.Popen, str]]:
    """DynamoDB Local and a moto server (the other services) on `host`, started, then stopped
    however the block ends: the benches' engines. Yields the engine, moto's process and its
    endpoint."""
    moto_port = free_port(host)
    moto = subprocess.Popen([sys.executable, "-m", "outpost_local.moto_server", "-H", host, "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = DynamoDbLocal(host, free_port(host))
    try:
        wait_port(host, moto_port, 60, moto)
        db.start()
        yield db, moto, f"http://{host}:{moto_port}"
    finally:
        db.stop()
        stop_process(moto, 10)


def main(argv: list[str] | None = None) -> int:
    """`python -m outpost_local.dynamodb_local install [--require]`: used by `make install`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "install":
        print("usage: python -m outpost_local.dynamodb_local install [--require]", file=sys.stderr)
        return 2
    reason = install()
    if reason is None:
        print(f"{ENGINE_LOCAL}: {emulator_dir()}"
              + ("" if _launcher_ready() else " (no loopback launcher: listens on all interfaces)"))
        return 0
    msg = f"DynamoDB Local not installed: {reason}; the local stack falls back to moto's DynamoDB"
    print(msg, file=sys.stderr)
    return 1 if "--require" in args else 0


if __name__ == "__main__":
    sys.exit(main())
