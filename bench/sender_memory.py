"""Benchmark: the sender's memory for one large message (issue 8 item 13).

Runs the real DeliveryService (build the MIME message with an uploaded attachment, DKIM-sign,
one SMTP transaction) against a sink SMTP server in another process on loopback; the store,
queue and suppressions are in-memory fakes, so what is measured is the sender's own work.
Each size runs in a fresh child process, which prints:
  tracemalloc's peak of Python allocations during the delivery, and
  ru_maxrss growth (peak RSS) over the process after imports and the attachment's bytes,
both in MB and as a multiple of the message size on the wire (`size_mb`, measured), and the
same per stage of the one delivery: `build` (MIME message, with the upload's bytes), `sign`
(DKIM) and `send` (the SMTP transaction and the rest), each the traced peak while that stage
ran (what is still alive from earlier stages included) and the RSS growth at its end.
The attachment's random bytes are made before measuring; each fetch of the upload returns a
fresh copy of them, counted in `build`, as the S3 read does in production.

Run: PYTHONPATH=layers/outpost .venv/bin/python bench/sender_memory.py [--sizes 1,10,30]
(the child processes use the same PYTHONPATH: point it at another tree to compare versions)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

SINK = r'''
import asyncio, sys
async def handle(r, w):
    w.write(b"220 sink ESMTP\r\n")
    while True:
        line = await r.readline()
        if not line:
            return
        cmd = line[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            w.write(b"250-sink\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
        elif cmd == b"DATA":
            w.write(b"354 go\r\n")
            await w.drain()
            tail = b""
            while True:
                chunk = await r.read(1 << 20)
                if not chunk:
                    return
                tail = (tail + chunk)[-5:]
                if tail.endswith(b"\r\n.\r\n"):
                    break
            w.write(b"250 2.0.0 Ok: queued as SINK\r\n")
        elif cmd == b"QUIT":
            w.write(b"221 bye\r\n")
            await w.drain()
            w.close()
            return
        else:
            w.write(b"250 ok\r\n")
        await w.drain()
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
'''


def child(size_mb: float, port: int) -> dict[str, Any]:
    from outpost.config import Settings
    from outpost.delivery import prepare as prepare_module
    from outpost.delivery.service import DeliveryService
    from outpost.delivery.transport import SmtpConnector
    from outpost.models import RecipientState
    from outpost.mx import MxHost
    from outpost.records import Message, Recipient, StoredMessage
    from outpost.signing import RSA, Signer, generate_key
    from outpost.stored_request import StoredRequest

    attachment = os.urandom(int(size_mb * 1024 * 1024))
    spec = {"from": "app@sender.test", "to": ["rcpt@sink.test"], "subject": "big", "text": "see attached",
            "attachments": [{"filename": "big.bin", "content_type": "application/octet-stream",
                             "upload_id": "0" * 32}]}
    meta = Message(message_id="m1", from_=spec["from"], subject="big", recipient_count=1,
                   spec=json.dumps(spec), deliver_until=time.time() + 3600, created_ts=time.time(),
                   size=int(len(attachment) * 1.37))
    rcpt = Recipient("m1", 0, "rcpt@sink.test", RecipientState.QUEUED)
    outcome: dict[str, Any] = {}

    class Store:
        def load(self, mid: str) -> StoredMessage:
            return StoredMessage(meta=meta, recipients=[rcpt])

        def load_request(self, m: Message) -> StoredRequest:
            return StoredRequest.from_json(m.spec or "{}")

        def claim(self, *a: Any) -> bool:
            return True

        def release(self, *a: Any) -> None:
            outcome["released"] = True

        def finish_attempt(self, mid: str, index: int, state: Any, *a: Any, **kw: Any) -> bool:
            outcome["state"] = state.value
            outcome["last"] = kw.get("last")
            return True

        def replace_job(self, *a: Any) -> bool:
            return True

    class Nothing:
        def suppressed(self, addresses: Any) -> set[str]:
            return set()

        def send(self, *a: Any) -> None:
            pass

    stages: dict[str, dict[str, float]] = {}
    wire: list[int] = []

    def rss_mb() -> float:
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    def stage_done(name: str) -> None:
        stages[name] = {"peak_mb": round(tracemalloc.get_traced_memory()[1] / 1e6, 1),
                        "rss_growth_mb": round(rss_mb() - base_rss, 1)}
        tracemalloc.reset_peak()

    build = prepare_module.build_message

    def measured_build(*a: Any, **kw: Any) -> Any:
        tracemalloc.reset_peak()
        out = build(*a, **kw)
        wire.append(len(out[0]))
        stage_done("build")
        return out

    prepare_module.build_message = measured_build  # type: ignore[assignment]

    class MeasuredSigner(Signer):
        def sign(self, message: bytes) -> bytes:
            tracemalloc.reset_peak()
            out = super().sign(message)
            stage_done("sign")
            return out

    signer = MeasuredSigner([generate_key("sender.test", "s1", RSA)])
    service = DeliveryService(
        settings=Settings(), store=Store(), suppressions=Nothing(), queue=Nothing(),  # type: ignore[arg-type]
        resolve_mx=lambda d: [MxHost("sink.test", 10, ("127.0.0.1",))],
        connector=SmtpConnector("mta.sender.test", port=port), signer_for=lambda d: signer,
        return_path=lambda mid, i: "b@bounces.sender.test",
        fetch_upload=lambda upload_id: bytes(memoryview(attachment)))
    event = {"Records": [{"messageId": "x", "body": json.dumps({"message_id": "m1"})}]}
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    started = time.monotonic()
    result = service.handle_sqs_event(event, lambda: 300_000)
    elapsed = time.monotonic() - started
    stage_done("send")
    tracemalloc.stop()
    rss = rss_mb()
    size = (wire[0] if wire else (meta.size or 0)) / 1e6
    peak = max(st["peak_mb"] for st in stages.values())
    return {"size_mb": round(size, 1), "state": outcome.get("state"), "released": outcome.get("released"),
            "failures": result["batchItemFailures"],
            "seconds": round(elapsed, 2), "tracemalloc_peak_mb": peak,
            "peak_x_size": round(peak / size, 2), "rss_growth_mb": round(rss - base_rss, 1),
            "stages": {name: {**st, "x_size": round(st["peak_mb"] / size, 2)} for name, st in stages.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,10,30", help="attachment sizes in MiB (30 MiB ~ 41.6 MB on the wire)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(float(args.child[0]), int(args.child[1]))))
        return
    from outpost_local.lifecycle import free_port  # here: the measured child imports none of it

    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        for size in args.sizes.split(","):
            env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or "layers/outpost")
            out = subprocess.run([sys.executable, __file__, "--child", size, str(port)], capture_output=True,
                                 text=True, env=env, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
