"""The webhook delivery job (the WebhookQueue's message body) and the retry schedule.

One job is one (event, endpoint) pair: a slow or dead endpoint holds up only its own jobs. The
job carries the event's payload, so the dispatcher needs no read of the event log; `attempt`
is the number of the attempt it will make (1: the first). Retries after a failure wait
`delay_after(attempt)`: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 hours over eight
attempts; Standard Webhooks' and Svix's schedule). SQS delays stop at 15 minutes, so a job due
later carries `not_before` and hops through the queue until then, like the sender's jobs
(delivery/job.py hop).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .schedule import DEFAULT_SCHEDULE

# An endpoint whose attempts have all failed for this long is disabled (its jobs then end).
DISABLE_AFTER = 5 * 86400


class WebhookJob(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)  # built on first use

    event_id: str = Field(min_length=1, max_length=128)
    endpoint_id: str = Field(min_length=1, max_length=64)
    type: str = Field(max_length=64)
    payload: dict[str, Any]
    attempt: int = Field(default=1, ge=1, le=100)
    not_before: float | None = None
    replay: bool = False  # sent again on request (POST .../replay): delivered or not before


def delay_after(attempt: int, schedule: tuple[float, ...] = DEFAULT_SCHEDULE) -> float | None:
    """Seconds from failed attempt `attempt` (1-based) to the next one; None after the last."""
    return schedule[attempt - 1] if 1 <= attempt <= len(schedule) else None
