"""MX lookup and ordering (RFC 5321 §5.1, RFC 7505 null MX).

- MX records in preference order, random order among equal preferences.
- No MX record: the domain's own address record is the MX ("implicit MX").
- A null MX (`0 .`) is a permanent failure, 5.1.10.
- NXDOMAIN is permanent (5.1.2); SERVFAIL, timeouts and unreachable servers are transient (4.4.3).
- IPv4 by default; IPv6 only when enabled (Gmail rejects IPv6 senders without reverse DNS).
  With IPv6 on, each host's IPv4 addresses are still tried before its IPv6 ones.
- Answers are cached in the container for their TTL (dnspython's Cache honours it), so a
  batch of messages to one domain asks DNS once.
- At most 5 MX hosts per attempt (Postfix's smtp_mx_session_limit order of magnitude).

The resolver also answers the TXT lookups of MTA-STS (`txt`) and the address lookup of the
policy host (`addresses`), with the same cache and the same servers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .errors import DnsError

MAX_MX_HOSTS = 5  # Postfix's smtp_mx_address_limit/session limit order of magnitude


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]
    implicit: bool = False


class MxResolver:
    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), *, ipv6: bool = False,
                 timeout: float = 5.0, max_hosts: int = MAX_MX_HOSTS,
                 shuffle: Callable[[list], None] = random.shuffle) -> None:
        if nameservers:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
        else:
            r = dns.resolver.Resolver()
        r.lifetime = timeout
        r.timeout = timeout
        r.cache = dns.resolver.Cache()
        self.resolver = r
        self.ipv6 = ipv6
        self.max_hosts = max_hosts
        self.shuffle = shuffle

    def _query(self, name: str, rtype: str) -> list | None:
        """Answers, or None for NODATA. NXDOMAIN raises permanent, anything else transient."""
        try:
            return list(self.resolver.resolve(name, rtype, search=False))
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise DnsError(f"{name}: no such domain (NXDOMAIN)", permanent=True, status="5.1.2") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise DnsError(f"{name} {rtype}: DNS lookup failed ({type(exc).__name__})",
                           permanent=False, status="4.4.3") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"{name} {rtype}: {exc}", permanent=False, status="4.4.3") from None

    def txt(self, name: str) -> list[str]:
        """TXT strings at `name` ([] for NXDOMAIN or NODATA); DnsError when DNS fails."""
        try:
            answers = self._query(name, "TXT")
        except DnsError as exc:
            if exc.permanent:
                return []
            raise
        return [b"".join(a.strings).decode("utf-8", "replace") for a in answers or ()]

    def addresses(self, host: str) -> tuple[str, ...]:
        out: list[str] = []
        for rtype in ("A", "AAAA") if self.ipv6 else ("A",):
            answers = self._query(host, rtype)
            out.extend(a.address for a in answers or ())
        return tuple(out)

    def resolve(self, domain: str) -> list[MxHost]:
        """The hosts to try for `domain`, in order, at most `max_hosts`. Raises DnsError."""
        answers = self._query(domain, "MX")
        if answers is None:
            addrs = self.addresses(domain)
            if not addrs:
                raise DnsError(f"{domain}: no MX and no address record", permanent=True, status="5.1.2")
            return [MxHost(domain, 0, addrs, implicit=True)]
        records = [(int(a.preference), a.exchange.to_text().rstrip(".").lower()) for a in answers]
        if any(name == "" for _, name in records):
            # RFC 7505 §3: a null MX means the domain accepts no mail.
            raise DnsError(f"{domain}: null MX, the domain accepts no mail", permanent=True, status="5.1.10")
        by_pref: dict[int, list[str]] = {}
        for pref, name in records:
            by_pref.setdefault(pref, []).append(name)
        ordered: list[tuple[int, str]] = []
        for pref in sorted(by_pref):
            group = by_pref[pref]
            self.shuffle(group)
            ordered.extend((pref, n) for n in group)
        hosts: list[MxHost] = []
        last_error: DnsError | None = None
        for pref, name in ordered[: self.max_hosts]:
            try:
                addrs = self.addresses(name)
            except DnsError as exc:
                last_error = exc
                continue
            if addrs:
                hosts.append(MxHost(name, pref, addrs))
        if not hosts:
            # Every MX host failed to resolve: a DNS problem on their side, try later (Postfix defers).
            msg = last_error and str(last_error) or f"{domain}: no MX host has an address"
            raise DnsError(msg, permanent=False, status="4.4.3")
        return hosts
