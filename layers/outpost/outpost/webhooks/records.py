"""The webhook records: an endpoint (with its signing secrets) and one delivery attempt.

Frozen dataclasses like records.py's; only the store (store.py WebhookStore) maps them to
items. A secret is never part of an endpoint's public view (`view()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..records import Record

# After a rotation, the previous secret keeps signing beside the new one this long (the
# Standard Webhooks spec allows several space-separated signatures for exactly this).
ROTATION_OVERLAP = 24 * 3600


@dataclass(frozen=True)
class WebhookSecret(Record):
    """One signing secret, `whsec_<base64>`; `until`: when it stops signing (None: current)."""

    secret: str
    created_at: str
    until: float | None = None


@dataclass(frozen=True)
class WebhookEndpoint(Record):
    endpoint_id: str
    url: str
    events: tuple[str, ...]
    created_at: str
    description: str = ""
    secrets: tuple[WebhookSecret, ...] = ()
    enabled: bool = True
    disabled_at: str | None = None
    disabled_reason: str | None = None
    # The first failed attempt since the last success (None: the last attempt succeeded).
    failing_since: float | None = None
    last_success_at: str | None = None

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets that sign at `now`: the current one and any still in its overlap."""
        return [s.secret for s in self.secrets if s.until is None or s.until > now]

    def view(self) -> dict[str, Any]:
        """The public view (GET): no secrets."""
        out = {"id": self.endpoint_id, "url": self.url, "events": list(self.events),
               "description": self.description, "enabled": self.enabled, "created_at": self.created_at}
        for k in ("disabled_at", "disabled_reason", "last_success_at"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_item(cls, d: dict[str, Any]) -> WebhookEndpoint:
        secrets = tuple(WebhookSecret.from_dict(s) for s in d.get("secrets") or ())
        return cls.from_dict(d, events=tuple(d.get("events") or ()), secrets=secrets)


@dataclass(frozen=True)
class WebhookAttempt(Record):
    """One POST of one event to one endpoint, or the verdict that ends a delivery.

    status: delivered (2xx) | retrying (failed; another attempt is queued) | failed (failed,
    and it was the last one, or the endpoint is disabled)."""

    endpoint_id: str
    event_id: str
    type: str
    attempt: int
    status: str
    at: str
    code: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    response: str | None = None  # a short excerpt of the body
    next_at: str | None = None
    replay: bool = False
