"""`python -m outpost.submission`: the SMTP submission server (the ECS Fargate container's
command). Settings from the environment (settings.py, plus the table, queue and bucket
variables the send API function gets); runs until SIGTERM or SIGINT."""

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
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"outpost submission listening on {settings.host}: STARTTLS {server.ports['starttls']}, "
          f"TLS {server.ports['tls']}", flush=True)
    await stop.wait()
    await server.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(SubmissionSettings.from_env()))


if __name__ == "__main__":
    main()
