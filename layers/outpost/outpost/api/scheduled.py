"""Scheduled sending and cancel (issue 14), the API's side: when a `send_at` is accepted, and
`POST /v1/messages/{id}/cancel`.

send_at: RFC 3339 with an offset (models.SendRequest), at most 30 days ahead (MAX_SCHEDULE;
beyond is a 422 naming `send_at`). A time not in the future (the past, or now) sends at once,
as SendGrid does with a past `send_at`: the recipients are `queued`, not refused, so a client
whose clock runs a little ahead or whose request waited in a retry loses nothing. The
delivery lifetime (`expires_in`, OUTPOST_MAX_LIFETIME) counts from send_at, and the message's
records are kept until that deadline plus the store's margin (MessageStore.expires_for reads
deliver_until). Bodies and uploads in S3 expire RetentionDays after the send (the bucket's
lifecycle), so a schedule whose deadline they would not outlive is refused (422 naming
`send_at`) rather than found missing at delivery time; with the defaults (30 days, a 2-day
lifetime) that allows about 27 days ahead: raise RetentionDays for the full 30.

Cancel: every recipient that is scheduled, queued or deferred becomes `canceled` (final) by
one conditional write each (store.cancel). One a sender holds right now (claimed, its lease
running: an SMTP transaction) is not touched: that transaction finishes and is recorded, and
the answer shows its state with `in_transaction: true`. The answer is 200 with each
recipient's status whether or not anything was left to cancel (not a 409): cancel is
idempotent, and a second call answers as the first did. A key bound to sending domains may
cancel only messages sent from those domains (403 naming `id`), as it may only send from them;
a test-mode key (sandbox.py) only messages sent in test mode (403 naming `id`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..addresses import AddressError, parse_address
from ..errors import ForbiddenError, InvalidRequestError, NotFoundError
from ..ids import is_message_id
from ..models import CANCELABLE_STATES, MAX_SCHEDULE, RecipientState
from ..records import Message, Recipient
from ..store import TTL_MARGIN, Messages
from .auth import Principal


def scheduled_for(send_at: datetime | None, now: float, *, lifetime: int,
                  retention_days: int | None) -> float | None:
    """The epoch time a request's recipients are scheduled for; None to send at once."""
    if send_at is None:
        return None
    at = send_at.timestamp()
    if at <= now:
        return None  # not in the future: at once (see the module docstring)
    if at > now + MAX_SCHEDULE:
        raise InvalidRequestError(f"send_at is more than {MAX_SCHEDULE // 86400} days ahead",
                                  field="send_at")
    if retention_days is not None and at + lifetime + TTL_MARGIN > now + retention_days * 86400:
        raise InvalidRequestError(
            f"send_at plus the delivery lifetime ({lifetime} s) ends after this deployment keeps "
            f"message bodies ({retention_days} days, RetentionDays, less a day): schedule it "
            "sooner or with a shorter expires_in", field="send_at")
    return at


def header_send_at(value: str | None, now: float, *, lifetime: int, retention_days: int | None,
                   field: str = "Outpost-Send-At") -> float | None:
    """SMTP submission's send_at (raw_message.SEND_AT_FIELD): the API's rules and reasons,
    naming the header field instead of `send_at` (the reply: 550 5.6.0 and the reason)."""
    if value is None:
        return None
    from ..models import _rfc3339

    try:
        when = _rfc3339(value)
        return scheduled_for(when, now, lifetime=lifetime, retention_days=retention_days)
    except (ValueError, InvalidRequestError) as exc:
        reason = (exc.message if isinstance(exc, InvalidRequestError) else str(exc)).replace("send_at", field)
        raise InvalidRequestError(reason if reason.startswith(field) else f"{field}: {reason}", field=field) from None


def cancel_message(store: Messages, message_id: str, principal: Principal | None,
                   clock: Callable[[], float]) -> dict:
    """POST /v1/messages/{id}/cancel: the answer (see the module docstring)."""
    if not is_message_id(message_id):
        raise NotFoundError(f"no message {message_id!r}", field="id")
    stored = store.load(message_id)
    if stored is None:
        raise NotFoundError(f"no message {message_id!r}", field="id")
    _check_domain(stored.meta, principal)
    for _ in range(2):  # a second pass for one released by a sender between our read and write
        now = clock()
        tried = [r for r in stored.recipients if _cancelable(r, now)]
        for r in tried:
            store.cancel(message_id, r.index, now)
        reread = store.load(message_id) if tried else stored
        if reread is None:
            raise NotFoundError(f"no message {message_id!r}", field="id")
        stored = reread
        if not any(_cancelable(r, clock()) for r in stored.recipients):
            break
    now = clock()
    recipients = [{"address": r.address, "status": r.state.value,
                   "in_transaction": r.is_open and _leased(r, now)} for r in stored.recipients]
    return {"id": message_id, "recipients": recipients,
            "canceled": sum(1 for r in stored.recipients if r.state is RecipientState.CANCELED)}


def _cancelable(r: Recipient, now: float) -> bool:
    return r.state in CANCELABLE_STATES and not _leased(r, now)


def _leased(r: Recipient, now: float) -> bool:
    return r.lease_until is not None and float(r.lease_until) >= now


def _check_domain(meta: Message, principal: Principal | None) -> None:
    if principal is not None and principal.mode == "test" and meta.mode != "test":
        # A test key's mail is simulated: it must not reach real mail, canceling included.
        raise ForbiddenError("a test-mode API key may cancel only messages sent in test mode", field="id")
    if principal is None or principal.domains is None:
        return
    try:
        domain = parse_address(meta.from_).ascii_domain
    except AddressError:
        domain = (meta.from_domain or "").lower()
    if domain not in principal.domains:
        raise ForbiddenError(f"this API key may cancel only messages from "
                             f"{', '.join(sorted(principal.domains))}", field="id")
