"""The submission server's settings, read once from the environment, with every limit named."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..models import MAX_MESSAGE_BYTES, MAX_RECIPIENTS

__all__ = ["SubmissionSettings", "budget_for_memory"]

# The process's memory that is not message bytes: the interpreter, boto3's clients, the worker
# threads, and TLS and stream buffers for up to max_connections sessions.
MEMORY_RESERVE_MB = 256
# Bytes the process holds per byte a DATA reserves, at the worst moment: aiosmtpd's lines and
# their joined copy, then send_raw's checked copy and the stored request (JSON). Measured: one
# 40.9 MB message (reserving 43.5 MB) raised the server's peak RSS by 274 MB (6.3x); 8 at once
# by 1,186 MB (3.4x each, their peaks do not coincide).
HOLD_FACTOR = 6


def budget_for_memory(memory_mb: int) -> int:
    """data_budget for a process given `memory_mb` (the Fargate task's Memory): what is left
    after the reserve, divided by what each reserved byte costs at most."""
    return max(0, memory_mb - MEMORY_RESERVE_MB) * 1024 * 1024 // HOLD_FACTOR


@dataclass(frozen=True)
class SubmissionSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a container behind a Network Load Balancer
    starttls_port: int = 587  # RFC 6409 submission, STARTTLS required before AUTH (RFC 3207)
    tls_port: int = 465  # RFC 8314 implicit TLS
    tls_secret: str | None = None  # Secrets Manager id: {"certificate_chain": PEM, "private_key": PEM}
    hostname: str = "outpost"  # the greeting's and EHLO's name
    max_message_bytes: int = MAX_MESSAGE_BYTES  # SIZE (RFC 1870); past it: 552 5.3.4
    max_recipients: int = MAX_RECIPIENTS  # RCPTs per transaction (the API's); past it: 452 4.5.3
    idle_timeout: float = 300.0  # seconds without a byte from the client (RFC 5321 §4.5.3.2.7)
    session_timeout: float = 1800.0  # seconds a connection may last, whatever it does
    max_connections_per_ip: int = 20  # past it: 421 4.7.0 at the greeting
    max_connections: int = 1000  # in all, per process
    auth_failures: int = 5  # failed AUTHs from one IP within auth_window ...
    auth_window: float = 300.0
    lockout: float = 900.0  # ... lock that IP out of AUTH (454 4.7.0) for this long
    workers: int = 16  # threads for the store and queue calls (boto3 is blocking)
    # Message bytes in flight in one process (each DATA reserves its declared SIZE, plus slack,
    # or max_message_bytes when it declared none); past it: 451 4.3.2 before the 354. The
    # process holds about HOLD_FACTOR times this at most (aiosmtpd's lines, the copies).
    # From OUTPOST_SUBMISSION_MEMORY_MB (the task's Memory) when set: budget_for_memory.
    data_budget: int = 400 * 1024 * 1024
    data_budget_share: float = 0.25  # of data_budget, at most, for one API key's DATAs at a time
    # On SIGTERM: seconds a DATA under way may still take before every session gets 421 4.3.2
    # (drain.py); below the task's StopTimeout (120 s), after which ECS SIGKILLs the process.
    drain_seconds: float = 100.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SubmissionSettings:
        e = os.environ if env is None else env
        return cls(host=e.get("OUTPOST_SUBMISSION_HOST") or cls.host,
                   starttls_port=int(e.get("OUTPOST_SUBMISSION_STARTTLS_PORT") or cls.starttls_port),
                   tls_port=int(e.get("OUTPOST_SUBMISSION_TLS_PORT") or cls.tls_port),
                   tls_secret=e.get("OUTPOST_SUBMISSION_TLS_SECRET") or None,
                   hostname=e.get("OUTPOST_SUBMISSION_HOSTNAME") or e.get("OUTPOST_EHLO_HOSTNAME")
                   or cls.hostname,
                   drain_seconds=float(e.get("OUTPOST_SUBMISSION_DRAIN_SECONDS") or cls.drain_seconds),
                   data_budget=budget_for_memory(int(e["OUTPOST_SUBMISSION_MEMORY_MB"]))
                   if e.get("OUTPOST_SUBMISSION_MEMORY_MB") else cls.data_budget)
