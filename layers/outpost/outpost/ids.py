"""Message identifiers: time-ordered, lowercase, safe inside an SMTP local part."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase


def new_message_id(now: float | None = None) -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits.

    Lowercase so that it survives MTAs that fold the case of a return path's local part.
    """
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def is_message_id(value: str) -> bool:
    return len(value) == 26 and all(c in _ALPHABET for c in value)
