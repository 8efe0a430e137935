"""API keys: bearer tokens, stored only as a SHA-256 hash, each with scopes; per-key throttling.

A key looks like `op_<43 url-safe base64 chars>` (256 random bits); the hash is enough to find
it, and a leaked table does not leak keys. Scopes: send, read, admin (admin implies the rest).
`key_id` (the first 12 hex digits of the hash) names a key in lists and logs; revoking sets
`revoked_at`, so the key's record (and when it was last used) stays for audit.

Throttling is a token bucket per key, kept in the container's memory: cheap (no extra
DynamoDB write per request) but per container, so N warm containers allow up to N times the
rate. The stage's own throttle in template.yaml (OutpostApi MethodSettings) is the global cap;
this one stops one key from taking all of it. A key may carry its own `rate`/`burst`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import AddressError, check_domain, to_ascii_domain
from ..clock import iso
from ..errors import ForbiddenError, NotFoundError, ThrottledError, UnauthorizedError
from ..records import ApiKey
from ..sandbox import MODES
from ..store import ApiKeys

SCOPES = ("send", "read", "admin")
TOUCH_EVERY = 60.0  # seconds between last_used_at writes for one key
_CACHE_SECONDS = 30.0  # a revoked key stops working in every container within this


def new_key() -> str:
    return "op_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    domains: frozenset[str] | None = None  # the sending domains this key may use; None: any
    mode: str = "live"  # "test": its messages are simulated (sandbox.py, issue 14)


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, rate: float | None = None, burst: int | None = None) -> float:
        """Take one token; 0.0 if granted, else the seconds until one is available."""
        rate = rate or self.rate
        burst = burst or self.burst
        now = self.clock()
        with self._lock:
            tokens, at = self._state.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def forget(self) -> None:
        """Every bucket full again (SnapStart: a restored copy's own rate state)."""
        with self._lock:
            self._state.clear()


class KeyRing:
    def __init__(self, keys: ApiKeys, clock: Callable[[], float] = time.time,
                 buckets: TokenBuckets | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.keys, self.clock, self.buckets, self.monotonic = keys, clock, buckets, monotonic
        self._touched: dict[str, float] = {}
        self._cached: dict[str, tuple[float, ApiKey | None]] = {}

    # ---- admin (the CLI; never on a request path) -------------------------------------------
    def create(self, name: str, scopes: list[str], *, rate: float | None = None,
               burst: int | None = None, domains: list[str] | None = None,
               mode: str = "live") -> tuple[str, dict]:
        """A new key. `domains` binds it to those sending domains (the From of its messages),
        as an SES IAM policy's ses:FromAddress condition or Postmark's per-server senders do;
        without, the key may send from any verified domain. `mode` "test": every message it
        sends is simulated (sandbox.py), from a verified domain like a live key's."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes must be among {SCOPES}, got {scopes}")
        bound = None
        if domains:
            try:
                bound = tuple(sorted({to_ascii_domain(check_domain(d)) for d in domains}))
            except AddressError as exc:
                raise ValueError(f"invalid domain: {exc}") from None
        key = new_key()
        h = key_hash(key)
        record = ApiKey(key_hash=h, key_id=h[:12], name=name, scopes=tuple(sorted(set(scopes))),
                        created_at=iso(self.clock()), rate=rate, burst=burst, domains=bound, mode=mode)
        self.keys.put_key(record)
        return key, record.as_dict()

    def list(self) -> list[dict]:
        """Every key (without its hash), oldest first. A Scan: the keys table is tiny."""
        return [k.public() for k in sorted(self.keys.keys(), key=lambda k: k.created_at or "")]

    def revoke(self, key_id: str) -> dict:
        found = self.keys.key_by_id(key_id)
        if found is None:
            raise NotFoundError(f"no API key {key_id!r}", field="key_id")
        return self.keys.revoke_key(found.key_hash, iso(self.clock())).public()

    # ---- the request path --------------------------------------------------------------------
    def identify(self, authorization: str | None) -> ApiKey:
        """The key's record, or UnauthorizedError (401). No scope check, no throttling."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'", field="Authorization")
        found = self._lookup(key_hash(authorization[7:].strip()))
        if found is None or found.revoked_at:
            raise UnauthorizedError("invalid or revoked API key", field="Authorization")
        return found

    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        found = self.identify(authorization)
        h = found.key_hash
        scopes = frozenset(found.scopes)
        if scope != "any" and scope not in scopes and "admin" not in scopes:
            raise ForbiddenError(f"this API key lacks the '{scope}' scope", field="Authorization")
        if self.buckets is not None:
            wait = self.buckets.take(h, found.rate, found.burst)
            if wait > 0:
                raise ThrottledError("too many requests for this API key; retry later", math.ceil(wait))
        now = self.clock()
        if now - self._touched.get(h, 0.0) > TOUCH_EVERY:
            self._touched[h] = now
            self.keys.touch_key(h, iso(now))
        return Principal(found.key_id, found.name, scopes,
                         frozenset(found.domains) if found.domains else None, mode=found.mode or "live")

    def _lookup(self, h: str) -> ApiKey | None:
        """The key's record, cached briefly: a warm request then costs no read for auth (and a
        key revoked elsewhere still works here for up to _CACHE_SECONDS)."""
        now = self.monotonic()
        hit = self._cached.get(h)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            return hit[1]
        found = self.keys.key_by_hash(h)
        if len(self._cached) > 1000:
            self._cached.clear()
        self._cached[h] = (now, found)
        return found

    def forget(self) -> None:
        """SnapStart restore: the cached keys, the last-used stamps and the token buckets
        dropped; their monotonic times belong to the snapshot's clock, and a copy's rate
        state is its own."""
        self._cached.clear()
        self._touched.clear()
        if self.buckets is not None:
            self.buckets.forget()
