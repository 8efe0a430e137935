"""Which webhook URLs Outpost may call (server-side request forgery defence, issue 12 item 4).

A URL is checked when it is registered (422 naming `url`) and again before every attempt (DNS
can change between the two; a name that resolved to a public address yesterday may resolve to
169.254.169.254 today). The check resolves the name itself and returns the address it checked:
the POST connects to exactly that address (http.py), with the name only in SNI and Host, so
nothing resolves the name a second time between the check and the connection.

  - https only; a URL with credentials (user:pass@) or without a host is refused;
  - every address the name resolves to (A and AAAA) must be public unicast (mx.is_public:
    no private, loopback, link-local, CGNAT, multicast, reserved, unspecified, unique-local
    IPv6, nor IPv6 forms embedding such an IPv4 address); one bad address refuses the URL,
    so a name cannot mix a public address with 169.254.169.254 and win half the time;
  - the cloud metadata addresses (169.254.169.254, fd00:ec2::254) are named in the refusal;
  - the local stack (OUTPOST_WEBHOOKS_LOCAL) also accepts http:// and https:// to names or
    literals whose every address is in 127.0.0.0/8 (its receivers live there).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import DnsLookupError, WebhookUrlError
from ..mx import is_public

MAX_URL = 2048
METADATA = frozenset({"169.254.169.254", "fd00:ec2::254"})
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?")

Resolve = Callable[[str], list[str]]  # a host name -> every A and AAAA address (DnsError on failure)


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `ip`:`port`, name `host` in SNI and Host, request `path`."""

    scheme: str
    host: str
    port: int
    path: str
    ip: str
    addresses: tuple[str, ...]


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip) in _LOOPBACK if ":" not in ip else False


def refusal(ip: str, allow_local: bool) -> str | None:
    """Why `ip` may not be called, or None if it may."""
    if ip in METADATA or ipaddress.ip_address(ip).compressed in METADATA:
        return f"{ip} is the cloud metadata service"
    if allow_local and _loopback(ip):
        return None
    if not is_public(ip):
        return f"{ip} is not a public address (private, loopback, link-local, CGNAT, reserved...)"
    return None


def parse_url(url: str, allow_local: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a URL that may be registered, before any DNS."""
    if len(url) > MAX_URL:
        raise WebhookUrlError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in (("https", "http") if allow_local else ("https",)):
        raise WebhookUrlError("only https:// URLs are accepted")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("a URL with credentials (user@host) is not accepted")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookUrlError("the URL has no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c in path for c in "\r\n\t "):
        raise WebhookUrlError("the URL's path holds whitespace")
    return scheme, host, port or (443 if scheme == "https" else 80), path


def check_url(url: str, *, resolve: Resolve, allow_local: bool = False) -> Target:
    """The URL's target, after checking every address its host resolves to (WebhookUrlError)."""
    scheme, host, port, path = parse_url(url, allow_local)
    try:
        addresses = [ipaddress.ip_address(host).compressed]
    except ValueError:
        if not _NAME.fullmatch(host) or len(host) > 253:
            raise WebhookUrlError(f"{host!r} is not a host name") from None
        try:
            addresses = list(dict.fromkeys(resolve(host)))
        except DnsLookupError as exc:
            raise WebhookUrlError(f"{host} could not be resolved: {exc}") from None
    if not addresses:
        raise WebhookUrlError(f"{host} has no address")
    for ip in addresses:
        why = refusal(ip, allow_local)
        if why is not None:
            raise WebhookUrlError(f"{host} resolves to {why}" if ip != host else why)
    if scheme == "http" and not all(_loopback(ip) for ip in addresses):
        raise WebhookUrlError("only https:// URLs are accepted (http:// only to the local stack's 127.0.0.0/8)")
    return Target(scheme, host, port, path, addresses[0], tuple(addresses))


def dns_resolve(resolver: object, lifetime: float = 3.0) -> Resolve:
    """A Resolve through a dnspython resolver: A and AAAA; NXDOMAIN or no data is no address,
    anything else a DnsLookupError."""
    import dns.exception
    import dns.resolver

    def resolve(host: str) -> list[str]:
        out: list[str] = []
        for rtype in ("A", "AAAA"):
            try:
                answers = resolver.resolve(host, rtype, lifetime=lifetime)  # type: ignore[attr-defined]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise DnsLookupError(f"{rtype} {host}: {type(exc).__name__}") from None
            out.extend(a.address for a in answers)
        return out

    return resolve
