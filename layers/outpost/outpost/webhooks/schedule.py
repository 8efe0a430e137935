"""The webhook retry schedule (jobs.py's delay_after reads it), apart from the job's pydantic model:
config.py's default needs only this, and the send API's init imports config (issue 15 item 1)."""

from __future__ import annotations

# Seconds between attempt n and n+1: after the first attempt (at once), 5 s, 5 min, 30 min,
# 2 h, 5 h, 10 h, 10 h. The local stack passes a shorter one (OUTPOST_WEBHOOK_RETRY_SCHEDULE).
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
