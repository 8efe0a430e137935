"""Benchmark: the sender's SMTP throughput over reused connections, beside Postfix's tools.

All in one run, on loopback, same message size, same number of parallel connections:
  (a) Outpost: DKIM (RSA-2048 + Ed25519, per message) + STARTTLS (verified, test CA) over
      reused connections (RSET between transactions, one recipient each, DSN/SIZE params),
      to an aiosmtpd sink in a separate process (outpost_local.mx.MxServer, Accept);
  (b) the same without DKIM, to separate signing from the wire;
  (c) Outpost: DKIM, plaintext, to Postfix's `smtp-sink` (it has no STARTTLS);
  (d) Postfix's `smtp-source -d -s C -m N -l SIZE` -> `smtp-sink` (no TLS, no DKIM: C code
      on both sides; the ceiling of the loopback + SMTP dialogue itself).
So (a) vs (d) is "everything Outpost does per message" vs "bare SMTP in C"; (c) vs (d)
isolates the client (Python asyncio + aiosmtplib + DKIM) against smtp-source with the same
sink. The sender drives the transport layer (SmtpConnector/SmtpSession) and signing.Signer
directly, as DeliveryService does, without the DynamoDB writes.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/sender_throughput.py \
         [--messages 2000] [--connections 4] [--size 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from outpost.delivery.transport import SmtpConnector
from outpost.signing import ED25519, RSA, Signer, generate_key
from outpost_local.lifecycle import free_port, wait_port

HOST = "127.0.5.201"


def message(i: int, size: int) -> bytes:
    head = (f"From: Outpost <noreply@bench.test>\r\nTo: user{i}@sink.test\r\n"
            f"Subject: Receipt {i}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <bench-{i}@bench.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"Thank you for your order. This line pads the body to a realistic size.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _sink_process(port: int, ca_dir: str, ready: mp.Event, stop: mp.Event) -> None:  # type: ignore[type-arg]
    from outpost_local.mx import MxServer
    from outpost_local.pki import TestPki

    pki = TestPki(ca_dir)
    with MxServer(HOST, port, None, pki.server_context("mx.sink.test"), hostname="mx.sink.test"):
        ready.set()
        stop.wait()


async def _drive(port: int, ca: str | None, n: int, conns: int, size: int, signer: Signer | None,
                 tls_expected: bool) -> float:
    connector = SmtpConnector("mta.bench.test", port=port, ca_bundle=ca)
    bodies = [message(i, size) for i in range(n)]

    async def worker(k: int) -> None:
        session = await connector.open("mx.sink.test", HOST)
        assert (session.tls is not None and session.tls.verified) == tls_expected, session.tls
        for i in range(k, n, conns):
            data = bodies[i]
            if signer is not None:
                data = signer.sign(data) + data
            reply = await session.send(f"b-{i}@bounces.bench.test", f"user{i}@sink.test", data,
                                       envid=f"bench-{i}")
            assert reply.code == 250, reply
        await session.close()

    t = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    return n / (time.perf_counter() - t)


def _smtp_sink(port: int) -> subprocess.Popen:
    cmd = ["/usr/sbin/smtp-sink"]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    cmd += ["-c", f"{HOST}:{port}", "256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(HOST, port, 15, proc, what="smtp-sink")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--size", type=int, default=3000)
    args = ap.parse_args()
    n, c, size = args.messages, args.connections, args.size
    signer = Signer([generate_key("bench.test", "s1", RSA), generate_key("bench.test", "s2", ED25519)])
    print(f"{n} messages of ~{size} bytes, {c} parallel connections, loopback, {os.cpu_count()} cores")

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port(HOST)
        ctx = mp.get_context("fork")
        ready, stop = ctx.Event(), ctx.Event()
        sink = ctx.Process(target=_sink_process, args=(port, tmp, ready, stop), daemon=True)
        sink.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the aiosmtpd sink did not start")
            ca = str(Path(tmp) / "ca.pem")
            results["(a) Outpost DKIM+STARTTLS -> aiosmtpd"] = asyncio.run(
                _drive(port, ca, n, c, size, signer, True))
            results["(b) Outpost STARTTLS, no DKIM -> aiosmtpd"] = asyncio.run(
                _drive(port, ca, n, c, size, None, True))
        finally:
            stop.set()
            sink.join(10)

    if shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists():
        port = free_port(HOST)
        proc = _smtp_sink(port)
        try:
            results["(c) Outpost DKIM, plaintext -> smtp-sink"] = asyncio.run(
                _drive(port, None, n, c, size, signer, False))
            cmd = ["/usr/sbin/smtp-source", "-d", "-s", str(c), "-m", str(n), "-l", str(size),
                   "-f", "noreply@bench.test", "-t", "user@sink.test", "-M", "mta.bench.test",
                   f"{HOST}:{port}"]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
            results["(d) Postfix smtp-source -> smtp-sink"] = n / (time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(10)
    else:
        print("Postfix's smtp-sink/smtp-source are not installed: (c) and (d) skipped")

    t = time.perf_counter()
    for i in range(300):
        signer.sign(message(i, size))
    sign_rate = 300 / (time.perf_counter() - t)
    for name, rate in results.items():
        print(f"{name:45s} {rate:8.0f} msg/s")
    print(f"{'DKIM signing alone (RSA-2048 + Ed25519)':45s} {sign_rate:8.0f} msg/s (one core)")
    a = results.get("(a) Outpost DKIM+STARTTLS -> aiosmtpd")
    d = results.get("(d) Postfix smtp-source -> smtp-sink")
    cc = results.get("(c) Outpost DKIM, plaintext -> smtp-sink")
    if a and d and cc:
        print(f"ratio (a)/(d) = {a / d:.2f}; (c)/(d) = {cc / d:.2f} (same sink, same size)")


if __name__ == "__main__":
    main()
