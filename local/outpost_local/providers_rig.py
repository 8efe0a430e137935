"""Provider-like MX hosts for the local stack (issue 11): mail "to Gmail, Outlook and Yahoo"
that is throttled the way those providers throttle, on loopback.

Each `Site` is a recipient domain whose MX has a provider's real MX host name, so Outpost's
`providers.provider_for()` groups it with that provider; the name resolves (in the local DNS
server, which answers for any name it holds, not only *.test) to its own 127.0.x.y address,
where an MxServer runs the provider's emulation from outpost_local.mx:

  gmail.test    MX gmail-smtp-in.l.google.com              Gmail: 421 4.7.28 at end of DATA
  outlook.test  MX outlook-com.olc.protection.outlook.com  Outlook: 451 4.7.650 at RCPT
  yahoo.test    MX mta5.am0.yahoodns.net                   Yahoo: 421 4.7.0 [TSS04] at MAIL

The rate limits, messages per connection and concurrent connections of each emulation are
parameters (`Emulation`); the defaults are round figures of the order providers are reported
to enforce, not published limits (providers do not publish them). Throttling is per client IP,
i.e. per peer address: Outpost's transport does not bind a source address, so every sender
container on one host connects from the same 127.0.0.1 (as a fleet shares one Elastic IP).

    hosts = start_providers(dns, pki, ip_prefix="127.0.2", port=smtp_port)   # or
    hosts = add_to_stack(stack, {"google": Emulation(per_window=300, window=60)})
    hosts["google"].counters()  # accepted, throttled, connections, refused, max_concurrent, ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .mx import (
    END_OF_DATA,
    GMAIL_RATE,
    OUTLOOK_RATE,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_MESSAGES,
    YAHOO_TSS04,
    Behaviour,
    ConnectionCap,
    MxServer,
    RateLimit,
    SessionCap,
)

__all__ = ["EMULATIONS", "SITES", "Emulation", "ProviderHost", "Site", "add_to_stack", "behaviours_for", "scaled",
           "start_providers"]


@dataclass(frozen=True)
class Site:
    provider: str  # what providers.provider_for(mx) answers
    domain: str  # the recipient domain
    mx: str  # its MX host: a real provider MX name
    octet: int  # the last octet of its address in the stack's 127.0.x prefix


SITES: tuple[Site, ...] = (
    Site("google", "gmail.test", "gmail-smtp-in.l.google.com", 50),
    Site("microsoft", "outlook.test", "outlook-com.olc.protection.outlook.com", 51),
    Site("yahoo", "yahoo.test", "mta5.am0.yahoodns.net", 52),
)


@dataclass(frozen=True)
class Emulation:
    """How one provider's MX throttles a client IP.

    per_window messages per `window` seconds (None: no rate limit; window None: per_window
    messages ever; a sliding window, or with `fixed_window` one that starts at multiples of
    `window` on the clock), answered `reply` at `stage` beyond it; `block_for` seconds of
    `reply` once over (None: only while the window is full). per_connection messages per session
    (None: no cap), connections concurrent sessions (None: no cap, counted only).
    """

    reply: str
    stage: str
    per_window: int | None = None
    window: float | None = 60.0
    block_for: float | None = None
    fixed_window: bool = False
    per_connection: int | None = None
    session_reply: str = TOO_MANY_MESSAGES
    connections: int | None = None
    connection_reply: str = TOO_MANY_CONNECTIONS


EMULATIONS: Mapping[str, Emulation] = {
    # Gmail: "421-4.7.28 ... (in reply to end of DATA command)" in senders' logs; Google asks
    # for a pause of at least 10 minutes, which the sender must do: the emulator only counts.
    "google": Emulation(GMAIL_RATE, END_OF_DATA, per_window=300, window=60.0, per_connection=100,
                        connections=20),
    # Outlook.com: 451 4.7.650 at RCPT; Exchange's own connection-limit reply.
    "microsoft": Emulation(OUTLOOK_RATE, "RCPT", per_window=300, window=60.0, per_connection=50,
                           connections=20,
                           connection_reply="421 4.3.2 The maximum number of concurrent server "
                                            "connections has exceeded a limit, closing transmission channel"),
    # Yahoo: TSS04 at MAIL FROM after M messages, then a deferral of the IP (KumoMTA suspends
    # Yahoo for 2 hours on it).
    "yahoo": Emulation(YAHOO_TSS04, "MAIL", per_window=1000, window=3600.0, block_for=7200.0,
                       per_connection=20, connections=20),
}


@dataclass
class ProviderHost:
    """A running provider-like MX: its site, address, server and emulators (their counters)."""

    site: Site
    ip: str
    server: MxServer
    connection_cap: ConnectionCap
    rate: RateLimit | None = None
    session_cap: SessionCap | None = None
    behaviours: list[Behaviour] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """accepted (messages taken), throttled (rate-limit replies), session_capped,
        connections, refused (at the greeting), max_concurrent (connections at once)."""
        cap = self.connection_cap.counters()
        return {
            "accepted": len(self.server.received),
            "throttled": self.rate.throttled if self.rate is not None else 0,
            "session_capped": self.session_cap.throttled if self.session_cap is not None else 0,
            "connections": cap["connections"],
            "refused": cap["refused"],
            "max_concurrent": cap["max_concurrent"],
        }

    def stop(self) -> None:
        self.server.stop()


def behaviours_for(emulation: Emulation, clock: Callable[[], float] = time.monotonic
                   ) -> tuple[ConnectionCap, RateLimit | None, SessionCap | None]:
    """The emulators for one provider, in the order the server must ask them."""
    cap = ConnectionCap(emulation.connections, emulation.connection_reply, clock=clock)
    rate = None
    if emulation.per_window is not None:
        rate = RateLimit(emulation.per_window, emulation.window, emulation.reply, stage=emulation.stage,
                         block_for=emulation.block_for, fixed=emulation.fixed_window, clock=clock)
    session = None
    if emulation.per_connection is not None:
        session = SessionCap(emulation.per_connection, emulation.session_reply, clock=clock)
    return cap, rate, session


def start_providers(
    dns: Any,
    pki: Any,
    *,
    ip_prefix: str,
    port: int,
    emulations: Mapping[str, Emulation] | None = None,
    providers: tuple[str, ...] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sites: tuple[Site, ...] = SITES,
) -> dict[str, ProviderHost]:
    """Start one MX per site (all, or those of `providers`) on `ip_prefix.<octet>:port` and
    publish its MX and A records in `dns` (a DnsServer); STARTTLS with a certificate for the
    MX name from `pki` (a TestPki; None: no STARTTLS). `emulations` override EMULATIONS per
    provider. Returns the hosts by provider; the caller stops them (ProviderHost.stop)."""
    hosts: dict[str, ProviderHost] = {}
    try:
        for site in sites:
            if providers is not None and site.provider not in providers:
                continue
            emulation = (emulations or {}).get(site.provider) or EMULATIONS[site.provider]
            cap, rate, session = behaviours_for(emulation, clock)
            behaviours: list[Behaviour] = [b for b in (cap, session, rate) if b is not None]
            ip = f"{ip_prefix}.{site.octet}"
            tls = pki.server_context(site.mx) if pki is not None else None
            server = MxServer(ip, port, behaviours, tls, hostname=site.mx).start()
            hosts[site.provider] = ProviderHost(site, ip, server, cap, rate, session, behaviours)
            dns.add(site.domain, "MX", (10, site.mx))
            dns.add(site.mx, "A", ip)
    except BaseException:
        for h in hosts.values():
            h.stop()
        raise
    return hosts


def add_to_stack(stack: Any, emulations: Mapping[str, Emulation] | None = None, *,
                 providers: tuple[str, ...] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, ProviderHost]:
    """start_providers() on a running LocalStack's DNS, CA, address prefix and SMTP port; the
    stack stops the hosts with its other components and lists them in `stack.mx`."""
    from .stack import MxSpec

    hosts = start_providers(stack.dns, stack.pki, ip_prefix=stack.config.ip_prefix, port=stack.smtp_port,
                            emulations=emulations, providers=providers, clock=clock)
    for provider, host in hosts.items():
        stack.components.append(host)
        stack.mx[host.site.domain] = MxSpec(host.site.domain, host.ip, f"emulates {provider}", host.server)
    return hosts


def scaled(emulation: Emulation, time_scale: float) -> Emulation:
    """The emulation with its time windows divided by `time_scale` (benches compress time)."""
    return replace(
        emulation,
        window=None if emulation.window is None else emulation.window / time_scale,
        block_for=None if emulation.block_for is None else emulation.block_for / time_scale,
    )
