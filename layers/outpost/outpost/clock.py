"""Time as the records write it: one timestamp format (UTC, milliseconds, `Z`) for every
record, list cursor and API answer, and the day a timestamp falls on (the list partitions)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso(ts: float) -> str:
    """`2026-11-29T23:40:00.123Z` for an epoch time: sorts as text in time order."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def iso_of(dt: datetime) -> str:
    """The same format for a datetime (a naive one is taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)  # from its fields, not a float: no rounding at the millisecond
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def day_of(ts: float) -> str:
    """The UTC day (`2026-11-29`) of an epoch time."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def iso_micro(ts: float) -> str:
    """`2026-11-29T23:40:00.123456+00:00` (datetime.isoformat: microseconds, left out when
    zero): the format of the DKIM key entries' `created_at` / `retired_at` in the Secrets
    Manager secret, kept as it is because stored secrets already hold it."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def epoch_of(text: str) -> float:
    """The epoch time of a timestamp in either format above (`Z` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
