"""MTA-STS (RFC 8461): which MX hosts a domain allows, and whether TLS to them is mandatory.

Lookup (RFC 8461 §3.1, §3.3, §5.1):
1. `_mta-sts.<domain>` TXT: exactly one record starting `v=STSv1`, carrying `id=`.
2. If the id differs from the cached policy's (or none is cached, or it has expired), fetch
   `https://mta-sts.<domain>/.well-known/mta-sts.txt`: HTTPS with a certificate valid for
   `mta-sts.<domain>`, no redirects, status 200, media type text/plain, at most 64 KiB.
3. Parse it (§3.2): version STSv1, mode enforce|testing|none, mx patterns (`*.example.com`
   matches one leftmost label), max_age in seconds (at most 31557600).

A policy is cached by domain until max_age runs out; a changed TXT id refreshes it. If the
TXT lookup or the fetch fails and a cached policy is still valid, the cached one is used
(§5.1: an attacker who blocks DNS or HTTPS must not switch enforcement off); with nothing
cached, delivery goes on as if the domain had no policy, and the failure is reported for the
attempt record.

The cache has two levels. The first is the container's memory. A Lambda container lives
minutes, and §5.1's protection is only as long as the cache, so the second level is a
persistent `PolicyCache` (DynamoDB, store.PolicyStore) shared by every container: on a
first-level miss it is read before the network, a freshly fetched policy is written through,
and an attacker facing a cold container still meets the policy another container fetched.
The persistent level is an optimisation of a safety property, never a dependency: when it
fails, the error is logged and the container's own cache decides, as it did without it.

The DNS lookup and the HTTPS fetch are passed in, so tests run a local DNS server and a local
HTTPS policy server with a test CA; `HttpsPolicyFetcher` connects to the address the
injected resolver gives for `mta-sts.<domain>` while verifying the certificate for that name.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "HttpsPolicyFetcher",
    "MtaSts",
    "PolicyCache",
    "StsPolicy",
    "StsPolicyError",
    "TlsPolicy",
    "mx_matches",
    "parse_policy",
    "parse_sts_txt",
]

Mode = Literal["enforce", "testing", "none"]
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: at most one year
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: senders may limit the body to 64 KiB
FETCH_TIMEOUT = 10.0  # RFC 8461 §3.3 suggests "a reasonable timeout"; a Lambda cannot wait 60 s
WELL_KNOWN = "/.well-known/mta-sts.txt"

log = logging.getLogger("outpost.sender")


class StsPolicyError(Exception):
    """The TXT record, the fetch or the policy text is not usable."""


@dataclass(frozen=True)
class StsPolicy:
    id: str
    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    fetched_at: float = 0.0

    def expires_at(self) -> float:
        return self.fetched_at + self.max_age

    def allows(self, mx_host: str) -> bool:
        return any(mx_matches(p, mx_host) for p in self.mx)


@dataclass(frozen=True)
class TlsPolicy:
    """What the sender must do for one domain. `policy` is None when there is no MTA-STS
    policy (or it is mode none); `error` says why a lookup that was tried gave nothing."""

    domain: str
    policy: StsPolicy | None = None
    error: str | None = None

    @property
    def mode(self) -> Mode:
        return self.policy.mode if self.policy else "none"

    def as_dict(self) -> dict:
        out: dict = {"mode": self.mode}
        if self.policy:
            out["id"] = self.policy.id
        if self.error:
            out["error"] = self.error
        return out


NO_POLICY = TlsPolicy("")


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: exact match, or `*.` matching exactly one leftmost label."""
    pattern = pattern.strip().lower().rstrip(".")
    host = host.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and "." + rest == suffix
    return pattern == host


def parse_sts_txt(records: list[str]) -> str:
    """The policy id from `_mta-sts` TXT records. RFC 8461 §3.1: records not starting with
    `v=STSv1` are ignored; more than one STS record means no policy."""
    sts = [r for r in records if r.strip().startswith("v=STSv1")]
    if not sts:
        raise StsPolicyError("no v=STSv1 TXT record")
    if len(sts) > 1:
        raise StsPolicyError("more than one v=STSv1 TXT record")
    fields: dict[str, str] = {}
    for part in sts[0].split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            fields[key.strip()] = value.strip()
    pid = fields.get("id", "")
    # id: 1*32(ALPHA / DIGIT)
    if not (1 <= len(pid) <= 32 and pid.isascii() and pid.isalnum()):
        raise StsPolicyError(f"invalid or missing id in TXT record: {sts[0]!r}")
    return pid


def parse_policy(text: str, policy_id: str, fetched_at: float = 0.0) -> StsPolicy:
    """Parse the policy file (RFC 8461 §3.2): `key: value` lines, CRLF or LF."""
    version = mode = None
    max_age: int | None = None
    mx: list[str] = []
    for raw in text.splitlines():
        key, colon, value = raw.partition(":")
        if not colon:
            continue
        key, value = key.strip(), value.strip()
        if key == "version":
            version = value
        elif key == "mode":
            mode = value
        elif key == "max_age":
            if not value.isdigit() or len(value) > 10:
                raise StsPolicyError(f"invalid max_age {value!r}")
            max_age = min(int(value), MAX_AGE_LIMIT)
        elif key == "mx":
            mx.append(value.lower())
        # Unknown keys are ignored (§3.2: "extension" fields).
    if version != "STSv1":
        raise StsPolicyError(f"unsupported policy version {version!r}")
    if mode not in ("enforce", "testing", "none"):
        raise StsPolicyError(f"invalid mode {mode!r}")
    if max_age is None:
        raise StsPolicyError("max_age missing")
    if mode != "none" and not mx:
        raise StsPolicyError("no mx patterns in an enforce/testing policy")
    return StsPolicy(policy_id, mode, tuple(mx), max_age, fetched_at)  # type: ignore[arg-type]


class HttpsPolicyFetcher:
    """GET the policy over HTTPS (urllib's http.client), resolving the policy host through the
    injected `resolve_a(name) -> [ip, ...]`, verifying the certificate for the name itself."""

    def __init__(self, resolve_a: Callable[[str], list[str]], *, ca_bundle: str | None = None,
                 port: int = 443, timeout: float = FETCH_TIMEOUT) -> None:
        self.resolve_a = resolve_a
        self.port = port
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2

    def __call__(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            addresses = self.resolve_a(host)
        except Exception as exc:  # noqa: BLE001 - any resolution failure means no fetch
            raise StsPolicyError(f"{host}: address lookup failed: {exc}") from None
        if not addresses:
            raise StsPolicyError(f"{host} has no address")
        last: Exception | None = None
        for ip in addresses:
            conn = _PinnedHttps(host, ip, self.port, self.context, self.timeout)
            try:
                conn.request("GET", WELL_KNOWN, headers={"Host": host, "User-Agent": "Outpost MTA-STS"})
                resp = conn.getresponse()
                # §3.3: redirects MUST NOT be followed; anything but 200 is no policy.
                if resp.status != 200:
                    raise StsPolicyError(f"https://{host}{WELL_KNOWN}: HTTP {resp.status}")
                ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise StsPolicyError(f"https://{host}{WELL_KNOWN}: media type {ctype!r}, not text/plain")
                body = resp.read(MAX_POLICY_BYTES + 1)
                if len(body) > MAX_POLICY_BYTES:
                    raise StsPolicyError(f"https://{host}{WELL_KNOWN}: policy larger than 64 KiB")
                return body.decode("utf-8", "replace")
            except StsPolicyError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            finally:
                conn.close()
        raise StsPolicyError(f"https://{host}{WELL_KNOWN}: {type(last).__name__}: {last}")


class _PinnedHttps(http.client.HTTPSConnection):
    """An HTTPS connection to a given IP whose TLS handshake names (SNI) and verifies `host`."""

    def __init__(self, host: str, ip: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip
        self._context = context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class PolicyCache(Protocol):
    """The persistent (cross-container) level of the policy cache. Either method may raise;
    MtaSts logs the error and carries on with its in-container cache."""

    def get(self, domain: str) -> StsPolicy | None: ...

    def put(self, domain: str, policy: StsPolicy) -> None: ...


@dataclass
class MtaSts:
    """The sender's MTA-STS view: `policy_for(domain)` -> TlsPolicy. Never raises.

    `txt(name)` returns the TXT strings at a name ([] when there is none) and raises for a
    lookup failure; `fetch(domain)` returns the policy text or raises StsPolicyError;
    `store`, if given, is the persistent cache level shared by all containers.
    """

    txt: Callable[[str], list[str]]
    fetch: Callable[[str], str]
    clock: Callable[[], float] = time.time
    store: PolicyCache | None = None
    _cache: dict[str, StsPolicy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, domain: str) -> TlsPolicy:
        return self.policy_for(domain)

    def _cached(self, domain: str, now: float) -> StsPolicy | None:
        with self._lock:
            p = self._cache.get(domain)
            if p is not None and p.expires_at() <= now:
                del self._cache[domain]
                p = None
        return p if p is not None else self._load(domain, now)

    def _load(self, domain: str, now: float) -> StsPolicy | None:
        """The persisted policy, if the store has one that is still valid. DynamoDB's TTL
        deletes expired items only eventually (within days), so expiry is checked here."""
        if self.store is None:
            return None
        try:
            p = self.store.get(domain)
        except Exception as exc:  # noqa: BLE001 - the store is an optimisation, never a dependency
            log.warning("MTA-STS policy store read failed; using the container cache only",
                        extra={"recipient_domain": domain, "error": f"{type(exc).__name__}: {exc}"})
            return None
        if p is None or p.expires_at() <= now:
            return None
        with self._lock:
            self._cache[domain] = p
        return p

    def _save(self, domain: str, policy: StsPolicy) -> None:
        if self.store is None:
            return
        try:
            self.store.put(domain, policy)
        except Exception as exc:  # noqa: BLE001 - the policy is still cached in the container
            log.warning("MTA-STS policy store write failed; cached in this container only",
                        extra={"recipient_domain": domain, "error": f"{type(exc).__name__}: {exc}"})

    def policy_for(self, domain: str) -> TlsPolicy:
        domain = domain.lower().rstrip(".")
        now = self.clock()
        # A container-cache miss reads the persistent store before any network lookup, so a
        # cold container facing a blocked TXT lookup or policy host still knows the policy.
        cached = self._cached(domain, now)
        try:
            records = self.txt(f"_mta-sts.{domain}")
        except Exception as exc:  # noqa: BLE001 - a DNS failure must not switch a policy off
            return self._fallback(domain, cached, f"TXT lookup failed: {exc}")
        if not records and cached is None:
            return TlsPolicy(domain)
        try:
            pid = parse_sts_txt(records)
        except StsPolicyError as exc:
            if cached is None:
                return TlsPolicy(domain) if not records else TlsPolicy(domain, error=str(exc))
            # §5.1: a vanished or broken record does not cancel a cached, unexpired policy.
            return TlsPolicy(domain, cached if cached.mode != "none" else None)
        if cached is not None and cached.id == pid:
            return TlsPolicy(domain, cached if cached.mode != "none" else None)
        try:
            policy = parse_policy(self.fetch(domain), pid, now)
        except Exception as exc:  # noqa: BLE001 - StsPolicyError, or anything the fetch raised
            return self._fallback(domain, cached, f"policy fetch failed: {exc}")
        with self._lock:
            self._cache[domain] = policy
        self._save(domain, policy)
        return TlsPolicy(domain, policy if policy.mode != "none" else None)

    def _fallback(self, domain: str, cached: StsPolicy | None, error: str) -> TlsPolicy:
        if cached is not None:
            return TlsPolicy(domain, cached if cached.mode != "none" else None, error)
        return TlsPolicy(domain, None, error)


def no_policy(domain: str) -> TlsPolicy:
    """The TLS policy of a world without MTA-STS (the default when nothing is injected)."""
    return TlsPolicy(domain)
