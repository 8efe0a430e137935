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

Hostile policy hosts (issue 8 item 5). One lookup, TXT and HTTPS together, has a total
deadline (`deadline`, 10 s by default, shortened by a caller's `budget`): the TXT and address
lookups get what is left as their DNS lifetime, and a watchdog shuts the HTTPS socket down when
it runs out, so a host that drips one byte every few seconds (each read well inside the
per-read timeout) is cut at the deadline, handshake and body alike. The body is capped at
64 KiB (§3.3), refused from its Content-Length when it says more. A failed lookup with no
valid cached policy means "no policy" (§3.3), and it is remembered for `negative_ttl`
(10 minutes): meanwhile the domain gets the cached policy or none without any network
lookup, so a hostile or broken domain costs one deadline per container per window, not one
per job. (Kept in the container only: a persisted failure could race another container's
fresh policy, and a cold container paying one lookup is cheap.) A lookup cut short by the
caller's budget, not by the domain, is not remembered.

The DNS lookup and the HTTPS fetch are passed in, so tests run a local DNS server and a local
HTTPS policy server with a test CA; `HttpsPolicyFetcher` connects to the address the
injected resolver gives for `mta-sts.<domain>` while verifying the certificate for that name.
"""

from __future__ import annotations

import http.client
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import StsPolicyError
from .net import HttpsClient, https_client

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
FETCH_TIMEOUT = 10.0  # per read; RFC 8461 §3.3 suggests "a reasonable timeout"; a Lambda cannot wait 60 s
LOOKUP_DEADLINE = 10.0  # one whole lookup: TXT, address and HTTPS together
NEGATIVE_TTL = 600.0  # a failed lookup means "no policy" for this long (no refetch meanwhile)
WELL_KNOWN = "/.well-known/mta-sts.txt"

log = logging.getLogger("outpost.sender")


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


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether an injected callable takes the keyword `name` (a deadline-aware lookup), so
    plain `f(name)` callables keep working."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class HttpsPolicyFetcher:
    """GET the policy over HTTPS (urllib's http.client), resolving the policy host through the
    injected `resolve_a(name) -> [ip, ...]`, verifying the certificate for the name itself.

    `deadline` (a time.monotonic() value) bounds the whole fetch: the address lookup (when
    `resolve_a` takes a `lifetime`), every connect, the handshake and every read."""

    def __init__(self, resolve_a: Callable[..., Any], *, ca_bundle: str | None = None,
                 port: int = 443, timeout: float = FETCH_TIMEOUT, https: HttpsClient | None = None) -> None:
        self.resolve_a = resolve_a
        self._resolve_takes_lifetime = _accepts(resolve_a, "lifetime")
        self.port = port
        # The connection comes from net (bootstrap passes its https_client()); which address to
        # connect to, and what to refuse, stays here.
        self.https = https or https_client(ca_bundle, timeout=timeout)

    def __call__(self, domain: str, deadline: float | None = None) -> str:
        host = f"mta-sts.{domain}"
        url = f"https://{host}{WELL_KNOWN}"
        end = time.monotonic() + LOOKUP_DEADLINE if deadline is None else deadline
        try:
            left = end - time.monotonic()
            addresses = (self.resolve_a(host, lifetime=left) if self._resolve_takes_lifetime
                         else self.resolve_a(host))
        except Exception as exc:  # noqa: BLE001 - any resolution failure means no fetch
            raise StsPolicyError(f"{host}: address lookup failed: {exc}") from None
        if not addresses:
            raise StsPolicyError(f"{host} has no address")
        last: Exception | None = None
        for ip in addresses:
            if time.monotonic() >= end:
                break
            conn = self.https.connect(host, ip, self.port, end)
            try:
                conn.request("GET", WELL_KNOWN, headers={"Host": host, "User-Agent": "Outpost MTA-STS"})
                resp = conn.getresponse()
                # §3.3: redirects MUST NOT be followed; anything but 200 is no policy.
                if resp.status != 200:
                    raise StsPolicyError(f"{url}: HTTP {resp.status}")
                ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise StsPolicyError(f"{url}: media type {ctype!r}, not text/plain")
                if resp.length is not None and resp.length > MAX_POLICY_BYTES:
                    raise StsPolicyError(f"{url}: policy of {resp.length} bytes, larger than 64 KiB")
                body = resp.read(MAX_POLICY_BYTES + 1)
                if conn.cut:
                    # The watchdog shut the socket: what was read may be a truncated policy.
                    raise StsPolicyError(f"{url}: deadline exceeded, fetch cut")
                if len(body) > MAX_POLICY_BYTES:
                    raise StsPolicyError(f"{url}: policy larger than 64 KiB")
                return body.decode("utf-8", "replace")
            except StsPolicyError:
                if conn.expired:  # a status or header cut short by the watchdog is no evidence
                    raise StsPolicyError(f"{url}: deadline exceeded, fetch cut") from None
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if conn.expired:
                    raise StsPolicyError(f"{url}: deadline exceeded, fetch cut") from None
                last = exc
            finally:
                conn.close()
        if last is None:
            raise StsPolicyError(f"{url}: deadline exceeded before connecting")
        raise StsPolicyError(f"{url}: {type(last).__name__}: {last}")


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

    txt: Callable[..., list[str]]
    fetch: Callable[..., str]
    clock: Callable[[], float] = time.time
    store: PolicyCache | None = None
    deadline: float = LOOKUP_DEADLINE  # seconds for one lookup, TXT and HTTPS together
    negative_ttl: float = NEGATIVE_TTL  # how long a failed lookup is remembered
    monotonic: Callable[[], float] = time.monotonic  # measures the deadline (clock may be fake)
    _cache: dict[str, StsPolicy] = field(default_factory=dict)
    _failed: dict[str, tuple[float, str]] = field(default_factory=dict)  # domain -> (until, error)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._txt_takes_lifetime = _accepts(self.txt, "lifetime")
        self._fetch_takes_deadline = _accepts(self.fetch, "deadline")

    def __call__(self, domain: str, budget: float | None = None) -> TlsPolicy:
        return self.policy_for(domain, budget)

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

    def policy_for(self, domain: str, budget: float | None = None) -> TlsPolicy:
        """The policy for `domain`, within `deadline` seconds, or `budget` if that is less
        (the caller's time left for this lookup)."""
        domain = domain.lower().rstrip(".")
        limit = self.deadline if budget is None else max(0.0, min(self.deadline, budget))
        end = self.monotonic() + limit
        now = self.clock()
        # A container-cache miss reads the persistent store before any network lookup, so a
        # cold container facing a blocked TXT lookup or policy host still knows the policy.
        cached = self._cached(domain, now)
        with self._lock:
            failed = self._failed.get(domain)
            if failed is not None and failed[0] <= now:
                del self._failed[domain]
                failed = None
        if failed is not None:
            # Negative cache: a recent lookup failed; no network until it runs out.
            return self._fallback(domain, cached, f"{failed[1]} (not retried until {failed[0]:.0f})")
        try:
            if limit <= 0:
                raise TimeoutError("no time left for the lookup")
            name = f"_mta-sts.{domain}"
            records = (self.txt(name, lifetime=end - self.monotonic()) if self._txt_takes_lifetime
                       else self.txt(name))
        except Exception as exc:  # noqa: BLE001 - a DNS failure must not switch a policy off
            return self._failure(domain, cached, f"TXT lookup failed: {exc}", end, limit)
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
            if self.monotonic() >= end:
                raise StsPolicyError("deadline exceeded before the policy fetch")
            text = self.fetch(domain, deadline=end) if self._fetch_takes_deadline else self.fetch(domain)
            policy = parse_policy(text, pid, now)
        except Exception as exc:  # noqa: BLE001 - StsPolicyError, or anything the fetch raised
            return self._failure(domain, cached, f"policy fetch failed: {exc}", end, limit)
        with self._lock:
            self._cache[domain] = policy
            self._failed.pop(domain, None)
        self._save(domain, policy)
        return TlsPolicy(domain, policy if policy.mode != "none" else None)

    def _failure(self, domain: str, cached: StsPolicy | None, error: str, end: float,
                 limit: float) -> TlsPolicy:
        """A failed lookup: remembered for negative_ttl unless only the caller's short budget
        (not the domain) made it fail; then the cached policy, or none."""
        if not (limit < self.deadline and self.monotonic() >= end - 0.05):
            with self._lock:
                self._failed[domain] = (self.clock() + self.negative_ttl, error)
        log.info("MTA-STS lookup failed", extra={"recipient_domain": domain, "error": error,
                                                  "cached_policy": cached is not None})
        return self._fallback(domain, cached, error)

    def _fallback(self, domain: str, cached: StsPolicy | None, error: str) -> TlsPolicy:
        if cached is not None:
            return TlsPolicy(domain, cached if cached.mode != "none" else None, error)
        return TlsPolicy(domain, None, error)


def no_policy(domain: str, budget: float | None = None) -> TlsPolicy:
    """The TLS policy of a world without MTA-STS (the default when nothing is injected)."""
    return TlsPolicy(domain)
