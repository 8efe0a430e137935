"""The real sender against the provider zone (outpost_local.providers_rig): gmail.test,
outlook.test and yahoo.test, under the providers' real MX names in a real DNS server, each
answered by a provider-like MX that throttles (the rig in sender_rig.py: DynamoDB Local, real
DNS, aiosmtpd MX hosts with STARTTLS). The emulators run on the rig's clock.

What a test of shaping or suspension relies on: Outpost sees these hosts as Google, Microsoft
and Yahoo (the attempt's MX name groups by providers.provider_for), gets each provider's
throttle reply at the stage the provider sends it, and the hosts take mail again once their
window (or Yahoo's deferral) is over.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sender_rig import PREFIX, Rig

from outpost.delivery.providers import provider_for
from outpost_local.mx import END_OF_DATA, GMAIL_RATE, OUTLOOK_RATE, YAHOO_TSS04
from outpost_local.providers_rig import SITES, Emulation, ProviderHost, start_providers

pytestmark = pytest.mark.timeout(120)

LIMIT = 2  # messages each emulated provider takes from one IP before it throttles
EMULATIONS = {
    "google": Emulation(GMAIL_RATE, END_OF_DATA, per_window=LIMIT, window=60.0),
    "microsoft": Emulation(OUTLOOK_RATE, "RCPT", per_window=LIMIT, window=60.0),
    "yahoo": Emulation(YAHOO_TSS04, "MAIL", per_window=LIMIT, window=None, block_for=3600.0),
}
# (code, enhanced status, command) of each provider's throttle as the attempt records it
THROTTLE = {"google": (421, "4.7.28", "EOD"), "microsoft": (451, "4.7.650", "RCPT"), "yahoo": (421, "4.7.0", "MAIL")}


@pytest.fixture
def providers(rig: Rig) -> Iterator[dict[str, ProviderHost]]:
    hosts = start_providers(rig.dns, rig.pki, ip_prefix=PREFIX, port=rig.smtp_port, emulations=EMULATIONS,
                            clock=rig.clock)
    try:
        yield hosts
    finally:
        for h in hosts.values():
            h.stop()


def test_the_sender_meets_each_providers_throttle_and_delivers_after_it(
        rig: Rig, providers: dict[str, ProviderHost]) -> None:
    sent: dict[str, list[str]] = {}
    for site in SITES:
        sent[site.provider] = [rig.send(f"u{n}@{site.domain}") for n in range(LIMIT + 2)]
        for mid in sent[site.provider]:
            rig.run(mid)

    for site in SITES:
        host = providers[site.provider]
        rcpts = [rig.rcpt(mid) for mid in sent[site.provider]]
        # The first LIMIT were delivered, over the provider's real MX name, grouped as it.
        for r in rcpts[:LIMIT]:
            assert r["state"] == "delivered", r
            mx = r["attempts"][-1]["mx"]
            assert mx == site.mx and provider_for(mx) == site.provider
        # The rest wait; the first one over the limit met the provider's throttle reply.
        assert [r["state"] for r in rcpts[LIMIT:]] == ["deferred", "deferred"], rcpts[LIMIT:]
        hit = rcpts[LIMIT]["attempts"][-1]
        code, status, command = THROTTLE[site.provider]
        assert (hit["code"], hit["status"], hit["command"]) == (code, status, command), hit
        assert "[TSS04]" in hit["text"] if site.provider == "yahoo" else "rate limited" in hit["text"]
        assert hit["mx"] == site.mx
        assert len(host.server.received) == LIMIT
        assert host.rate is not None and host.rate.throttled >= 1
        assert host.counters()["accepted"] == LIMIT

    # Within Gmail's and Outlook's window (and Yahoo's deferral), the hosts still refuse.
    rig.clock.advance(30)
    for host in providers.values():
        assert host.rate is not None
        (sender_ip,) = host.rate.accepted_by_ip  # one client IP: the sender's
        assert not host.rate.admit(sender_ip)
    # Past all of them (and past any suspension the sender may have recorded): all delivered.
    rig.clock.advance(3 * 3600)
    for site in SITES:
        for mid in sent[site.provider][LIMIT:]:
            rig.run(mid)
        states = [rig.rcpt(mid)["state"] for mid in sent[site.provider]]
        assert states == ["delivered"] * (LIMIT + 2), (site.provider, states)
        received = {r for rec in providers[site.provider].server.received for r in rec.rcpt_tos}
        assert received == {f"u{n}@{site.domain}" for n in range(LIMIT + 2)}
