"""MX lookup and ordering (RFC 5321 §5.1, RFC 7505 null MX).

- MX records in preference order, random order among equal preferences.
- No MX record: the domain's own address record is the MX ("implicit MX").
- A null MX (`0 .`) is a permanent failure, 5.1.10.
- NXDOMAIN is permanent (5.1.2); SERVFAIL, timeouts and unreachable servers are transient (4.4.3).
- IPv4 by default; IPv6 only when enabled (Gmail rejects IPv6 senders without reverse DNS).
  With IPv6 on, each host's IPv4 addresses are still tried before its IPv6 ones.
- Answers are cached in the container for their TTL (dnspython's Cache honours it), so a
  batch of messages to one domain asks DNS once.
- At most `max_hosts` MX hosts (5) and `max_addresses` addresses in total (5, Postfix's
  smtp_mx_address_limit) per attempt, so a domain publishing dozens of MX hosts with dozens of
  addresses each costs at most five connection attempts. The addresses of one host are
  shuffled (Postfix's smtp_randomize_addresses) so the cap does not always pick the same ones.
- Only public addresses (issue 8 item 8): an MX or policy host that resolves to a private,
  loopback, link-local, CGNAT, multicast, reserved or unspecified address (or an IPv6 form of
  one: ULA, link-local, v4-mapped, 6to4, Teredo, NAT64) is not used, so a recipient domain
  cannot point the sender into its own VPC or at the metadata service. Such addresses are
  dropped; when no MX host has a public address left, the domain gets a permanent 5.4.4
  ("unable to route", RFC 3463), like a null MX: the DNS as published offers no usable mail
  host, and retrying for days would only probe our network again. `allow_private=True` (the
  local stack's OUTPOST_ALLOW_PRIVATE_MX) turns the check off.

The resolver also answers the TXT lookups of MTA-STS (`txt`) and the address lookup of the
policy host (`addresses`), with the same cache and the same servers.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver

from .errors import DnsError, DnsLookupError, NoSuchDomainError, NullMxError, RefusedAddressError
from .net import dns_resolver

MAX_MX_HOSTS = 5  # MX names resolved per attempt
MAX_MX_ADDRESSES = 5  # addresses returned per attempt, over all hosts (Postfix smtp_mx_address_limit)
DNS_TIMEOUT = 5.0  # seconds: one lookup, and one server's answer

log = logging.getLogger("outpost.sender")

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for everything a recipient domain
    must not make the sender connect to (RFC 6890 special-purpose registries), including IPv6
    forms that embed such an IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(str(ip.ipv4_mapped))
        if ip.sixtofour is not None and not is_public(str(ip.sixtofour)):
            return False
        if ip.teredo is not None and not is_public(str(ip.teredo[1])):
            return False
        if ip in _NAT64:
            return is_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return ip.is_global and not (ip.is_multicast or ip.is_private or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_unspecified)


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]
    implicit: bool = False


class MxResolver:
    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), *, ipv6: bool = False,
                 timeout: float = DNS_TIMEOUT, max_hosts: int = MAX_MX_HOSTS,
                 max_addresses: int = MAX_MX_ADDRESSES, allow_private: bool = False,
                 shuffle: Callable[[list], None] = random.shuffle,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        # `resolver`: bootstrap's dns_resolver(); else one built the same way from `nameservers`.
        self.resolver = resolver or dns_resolver(nameservers, lifetime=timeout, timeout=timeout, cache=True)
        self.ipv6 = ipv6
        self.max_hosts = max_hosts
        self.max_addresses = max(1, max_addresses)
        self.allow_private = allow_private
        self.shuffle = shuffle

    def _query(self, name: str, rtype: str, lifetime: float | None = None) -> list | None:
        """Answers, or None for NODATA. NXDOMAIN raises NoSuchDomainError, anything else DnsLookupError.
        `lifetime` shortens the resolver's own limit (a caller with a deadline)."""
        if lifetime is not None:
            lifetime = min(lifetime, float(self.resolver.lifetime))
            if lifetime <= 0:
                raise DnsLookupError(f"{name} {rtype}: no time left for the lookup")
        try:
            return list(self.resolver.resolve(name, rtype, search=False, lifetime=lifetime))
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomainError(f"{name}: no such domain (NXDOMAIN)") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise DnsLookupError(f"{name} {rtype}: DNS lookup failed ({type(exc).__name__})") from None
        except dns.exception.DNSException as exc:
            raise DnsLookupError(f"{name} {rtype}: {exc}") from None

    def txt(self, name: str, lifetime: float | None = None) -> list[str]:
        """TXT strings at `name` ([] for NXDOMAIN or NODATA); DnsError when DNS fails."""
        try:
            answers = self._query(name, "TXT", lifetime)
        except NoSuchDomainError:
            return []
        return [b"".join(a.strings).decode("utf-8", "replace") for a in answers or ()]

    def addresses(self, host: str, lifetime: float | None = None) -> tuple[str, ...]:
        """The usable addresses of `host`: IPv4 (shuffled), then IPv6 if enabled; non-public
        ones dropped unless allowed. RefusedAddressError when the host has
        addresses but none is usable; () when it has none at all."""
        out: list[str] = []
        refused: list[str] = []
        for rtype in ("A", "AAAA") if self.ipv6 else ("A",):
            answers = self._query(host, rtype, lifetime)
            found = [a.address for a in answers or ()]
            self.shuffle(found)
            for ip in found:
                (out if self.allow_private or is_public(ip) else refused).append(ip)
        if refused:
            log.warning("refusing non-public addresses", extra={"host": host, "refused": refused[:8]})
            if not out:
                raise RefusedAddressError(host, refused)
        return tuple(out)

    def resolve(self, domain: str) -> list[MxHost]:
        """The hosts to try for `domain`, in order: at most `max_hosts` names and
        `max_addresses` addresses in all. Raises DnsError."""
        answers = self._query(domain, "MX")
        if answers is None:
            addrs = self.addresses(domain)
            if not addrs:
                raise NoSuchDomainError(f"{domain}: no MX and no address record")
            return [MxHost(domain, 0, addrs[: self.max_addresses], implicit=True)]
        records = [(int(a.preference), a.exchange.to_text().rstrip(".").lower()) for a in answers]
        if any(name == "" for _, name in records):
            # RFC 7505 §3: a null MX means the domain accepts no mail.
            raise NullMxError(f"{domain}: null MX, the domain accepts no mail")
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
        refused: RefusedAddressError | None = None
        budget = self.max_addresses
        for pref, name in ordered[: self.max_hosts]:
            if budget <= 0:
                break  # smtp_mx_address_limit reached: no more lookups either
            try:
                addrs = self.addresses(name)
            except RefusedAddressError as exc:
                refused = exc
                continue
            except DnsError as exc:
                last_error = exc
                continue
            if addrs:
                hosts.append(MxHost(name, pref, addrs[:budget]))
                budget -= len(hosts[-1].addresses)
        if not hosts:
            if refused is not None and last_error is None:
                # Every MX host that resolved points at a refused address (item 8): permanent.
                raise RefusedAddressError(domain, refused.refused, f"{domain}: every MX host resolves to a "
                                          f"non-public address ({refused}); not delivering")
            # Every MX host failed to resolve: a DNS problem on their side, try later (Postfix defers).
            msg = last_error and str(last_error) or f"{domain}: no MX host has an address"
            raise DnsLookupError(msg)
        return hosts
