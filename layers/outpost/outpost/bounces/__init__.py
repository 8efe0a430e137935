"""Bounce parsing: RFC 3464 DSNs, plain-text bounces, ARF complaints, auto-replies.

Public API: ``parse_bounce(raw) -> BounceReport`` and ``classify(status, diagnostic, ...)``.
Kept light: the parser modules are imported on first use of parse_bounce; classify (a few
compiled patterns) is imported eagerly because the sender needs it on every reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outpost.bounces.classify import classify, status_from_text
from outpost.bounces.report import BounceRecipient, BounceReport

if TYPE_CHECKING:  # pragma: no cover
    from outpost.bounces.dsn import parse_bounce

__all__ = ["BounceRecipient", "BounceReport", "classify", "parse_bounce", "status_from_text"]


def __getattr__(name: str) -> Any:
    # The parser (email package, family table) loads on first use of parse_bounce.
    if name == "parse_bounce":
        from outpost.bounces.dsn import parse_bounce

        return parse_bounce
    raise AttributeError(name)
