"""API keys: bearer tokens, stored only as a SHA-256 hash, each with scopes.

A key looks like `op_<43 url-safe base64 chars>` (256 random bits); the hash is enough to find
it, and a leaked table does not leak keys. Scopes: send, read, admin (admin implies the rest).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Forbidden, Unauthorized
from ..store import KeyValueTable, _iso

SCOPES = ("send", "read", "admin")
TOUCH_EVERY = 60.0  # seconds between last_used_at writes for one key


def new_key() -> str:
    return "op_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]


class KeyRing:
    def __init__(self, table: KeyValueTable, clock: Callable[[], float] = time.time) -> None:
        self.table, self.clock = table, clock
        self._touched: dict[str, float] = {}

    def create(self, name: str, scopes: list[str]) -> tuple[str, dict]:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes must be among {SCOPES}, got {scopes}")
        key = new_key()
        h = key_hash(key)
        item = {"key_hash": h, "key_id": h[:12], "name": name, "scopes": sorted(set(scopes)),
                "created_at": _iso(self.clock())}
        self.table.put(item)
        return key, item

    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", field="Authorization")
        key = authorization[7:].strip()
        h = key_hash(key)
        item = self.table.get(h)
        if item is None or item.get("revoked_at") or not hmac.compare_digest(item["key_hash"], h):
            raise Unauthorized("invalid or revoked API key", field="Authorization")
        scopes = frozenset(item.get("scopes") or [])
        if scope not in scopes and "admin" not in scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope", field="Authorization")
        now = self.clock()
        if now - self._touched.get(h, 0.0) > TOUCH_EVERY:
            self._touched[h] = now
            self.table.touch(h, "last_used_at", _iso(now))
        return Principal(item.get("key_id", h[:12]), item.get("name", ""), scopes)
