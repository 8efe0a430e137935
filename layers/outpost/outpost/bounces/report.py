"""The result types of bounce parsing: one report per message, one entry per recipient.

Frozen dataclasses (STYLE: frozen dataclasses inside); the bounce processor turns them into
suppressions and message-status updates, the CLI into JSON lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BounceRecipient:
    """What one failed (or delayed) recipient's entry says (RFC 3464 section 2.3)."""

    address: str  # local part as written, domain lowercased (as Sisimai)
    action: str | None  # failed | delayed | delivered | relayed | expanded | None
    status: str | None  # RFC 3463 code such as "5.1.1", or None when the mail has none
    kind: str  # "hard" | "soft" | "unknown"
    reason: str  # Sisimai vocabulary: userunknown, mailboxfull, ...
    diagnostic: str | None  # e.g. "550 5.1.1 <x@y>: Recipient address rejected"
    reply_code: int | None = None
    remote_mta: str | None = None
    original_recipient: str | None = None
    last_attempt: str | None = None


@dataclass(frozen=True)
class BounceReport:
    """Everything parse_bounce() learnt from one inbound message."""

    kind: str  # "dsn" | "feedback" | "autoreply" | "none"
    recipients: tuple[BounceRecipient, ...]
    family: str | None = None  # which MTA family matched, e.g. "rfc3464", "postfix", "exim"
    reporting_mta: str | None = None
    envelope_id: str | None = None  # Original-Envelope-Id (RFC 3461 ENVID)
    arrival_date: str | None = None
    original_message_id: str | None = None  # Message-ID of the bounced original, if included
    # Headers of the included message/rfc822 or text/rfc822-headers part, in order.
    original_headers: tuple[tuple[str, str], ...] = ()
    # The bounce's own To / Delivered-To / X-Original-To addresses: where a VERP token is.
    to_addresses: tuple[str, ...] = ()


NOT_A_BOUNCE = BounceReport(kind="none", recipients=())
