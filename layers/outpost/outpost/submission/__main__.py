"""`python -m outpost.submission`: the SMTP submission server (the ECS Fargate container's
command). Settings from the environment (settings.py, plus the table, queue and bucket
variables the send API function gets); runs until SIGTERM or SIGINT, then drains its sessions
(drain.py, at most OUTPOST_SUBMISSION_DRAIN_SECONDS) and exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal

from .. import bootstrap
from .settings import SubmissionSettings


async def serve(settings: SubmissionSettings) -> None:
    server = bootstrap.submission_server(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # the first starts the drain (server.close); a second cuts it short
        if stop.is_set():
            server.sessions.cut_short()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    print(f"outpost submission listening on {settings.host}: STARTTLS {server.ports['starttls']}, "
          f"TLS {server.ports['tls']}", flush=True)
    await stop.wait()
    await server.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs ~5 INFO lines per connection, so one per NLB health check (every 10 s, per
    # port and per load balancer node), and every command line with its addresses: its warnings
    # only. Outpost's own lines (outpost.submission, the send service) say what happened.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(SubmissionSettings.from_env()))


if __name__ == "__main__":
    main()
