"""Return-path tokens: a VERP-style envelope sender per message and recipient.

`b-<message id>-<recipient index>-<mac>@<bounce domain>`. The MAC is HMAC-SHA256 over the id and
index, cut to 50 bits and written in lowercase base32, so that a bounce can be tied to its
recipient without trusting the bounce's text, and a forged bounce (right shape, wrong MAC) can
never suppress an address. Lowercase survives MTAs that fold local-part case.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\bb-([0-9a-hjkmnp-tv-z]{26})-(\d{1,4})-([a-z2-7]{10})@([a-z0-9.-]+)", re.I)


@dataclass(frozen=True)
class ReturnPath:
    message_id: str
    recipient_index: int
    verified: bool
    address: str


def _mac(key: bytes, message_id: str, index: int) -> str:
    digest = hmac.new(key, f"{message_id}.{index}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()[:10]


def make_return_path(key: bytes, message_id: str, index: int, bounce_domain: str) -> str:
    return f"b-{message_id}-{index}-{_mac(key, message_id, index)}@{bounce_domain}"


def read_return_path(key: bytes, text: str, bounce_domain: str | None = None) -> ReturnPath | None:
    """Find a return-path token in an address or a block of text and check its MAC: the first
    token that verifies, else the first one seen (so that a forgery can be recorded as such)."""
    first: ReturnPath | None = None
    for m in _TOKEN.finditer(text or ""):
        message_id, index, mac, domain = m.group(1).lower(), int(m.group(2)), m.group(3).lower(), m.group(4).lower()
        if bounce_domain and domain.rstrip(".") != bounce_domain.lower():
            continue
        ok = hmac.compare_digest(mac, _mac(key, message_id, index))
        found = ReturnPath(message_id, index, ok, m.group(0).lower())
        if ok:
            return found
        first = first or found
    return first
