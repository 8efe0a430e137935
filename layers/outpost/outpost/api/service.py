"""Send and query: what the API does, without HTTP (routes.py is the HTTP side)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..addresses import normalise, parse_address
from ..errors import Forbidden, NotFound, ValidationFailed
from ..ids import is_message_id, new_message_id
from ..models import QueueJob, RecipientState, SendRequest
from ..store import JobQueue, KeyValueTable, MessageStore, SuppressionStore, _iso


class SendService:
    def __init__(self, *, store: MessageStore, suppressions: SuppressionStore, queue: JobQueue,
                 domains: KeyValueTable, clock: Callable[[], float] = time.time) -> None:
        self.store, self.suppressions, self.queue, self.domains = store, suppressions, queue, domains
        self.clock = clock

    def send(self, req: SendRequest) -> dict:
        sender = parse_address(req.from_)
        domain = self.domains.get(sender.domain)
        if domain is None or not domain.get("verified"):
            # No open relay: only domains whose DKIM key is published and verified may send.
            raise Forbidden(f"the sender domain {sender.domain!r} is not a verified Outpost domain",
                            field="from")
        now = self.clock()
        message_id = new_message_id(now)
        rcpts = req.recipients()
        suppressed = self.suppressions.suppressed(a for a, _ in rcpts)
        recipients = []
        for i, (addr, kind) in enumerate(rcpts):
            state = RecipientState.SUPPRESSED if addr.lower() in suppressed else RecipientState.QUEUED
            recipients.append({"index": i, "address": addr, "field": kind, "state": state.value})
        meta = {"message_id": message_id, "from": req.from_, "from_domain": sender.domain,
                "subject": req.subject, "tags": req.tags, "tls": req.tls,
                "deliver_until": now + req.expires_in, "recipient_count": len(recipients)}
        spec = req.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        self.store.create(meta, recipients, spec, now)
        if any(r["state"] == RecipientState.QUEUED.value for r in recipients):
            self.queue.send(QueueJob(message_id=message_id))
        return {"id": message_id,
                "recipients": [{"address": r["address"], "status": r["state"]} for r in recipients]}


class QueryService:
    def __init__(self, *, store: MessageStore, suppressions: SuppressionStore) -> None:
        self.store, self.suppressions = store, suppressions

    def message(self, message_id: str) -> dict:
        if not is_message_id(message_id):
            raise NotFound(f"no message {message_id!r}", field="id")
        stored = self.store.load(message_id)
        if stored is None:
            raise NotFound(f"no message {message_id!r}", field="id")
        m = stored.meta
        bounces: dict[int, list[dict]] = {}
        for b in stored.bounces:
            bounces.setdefault(int(b["sk"].split("#")[1]), []).append(_public(b, _BOUNCE_FIELDS))
        recipients = []
        for r in stored.recipients:
            out = _public(r, ("address", "field", "state", "updated_at", "remote_id", "last", "bounce"))
            if r.get("next_attempt_at") and r["state"] == RecipientState.DEFERRED.value:
                out["next_attempt_at"] = _iso(r["next_attempt_at"])
            out["attempts"] = r.get("attempts") or []
            out["bounces"] = bounces.get(r["index"], [])
            recipients.append(out)
        states = {r["state"] for r in recipients}
        return {"id": message_id, "from": m["from"], "subject": m["subject"],
                "created_at": m["created_at"], "expires_at": _iso(m["deliver_until"]),
                "tags": m.get("tags") or {}, "tls": m.get("tls"),
                "status": _summary(states), "recipients": recipients}

    def suppression(self, address: str) -> dict:
        try:
            key = normalise(address)
        except ValueError as exc:
            raise ValidationFailed(f"invalid address: {exc}", field="address") from None
        item = self.suppressions.get(key)
        if item is None:
            raise NotFound(f"{key} is not suppressed", field="address")
        return _public(item, ("address", "reason", "kind", "source", "message_id", "status",
                              "diagnostic", "created_at"))


_BOUNCE_FIELDS = ("address", "action", "status", "kind", "reason", "diagnostic", "reporting_mta",
                  "remote_mta", "received_at", "s3_key", "type", "verified")


def _public(item: dict, fields: tuple[str, ...]) -> dict:
    return {k: item[k] for k in fields if k in item}


def _summary(states: set[str]) -> str:
    """One word for the message: 'sending' while any recipient is open, else the final mix."""
    if states & {RecipientState.QUEUED.value, RecipientState.DEFERRED.value}:
        return "sending"
    if len(states) == 1:
        return next(iter(states))
    return "partial"
