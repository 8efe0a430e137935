"""Live classification is host-aware (issue 11 review, item 4), against real servers on
loopback (sender_rig.py: DynamoDB Local, a real DNS server, aiosmtpd MX hosts with STARTTLS
verified against the test CA): a provider's own reply texts are read only in replies from
that provider's MX host, named in the local DNS as the provider names it; the same text from
any other host is read by the generic rules.

- KDDI's hosts answer "550 : User unknown" (no address) when the recipient's own filter
  refuses the sender (Sisimai::Rhost::KDDI): from lsean.ezweb.ne.jp the recipient bounces
  soft (filtered), not suppressed; from another host the same reply is an unknown user
  (hard, suppressed).
- Microsoft's "550 5.7.1 Unable to relay" from its MX is norelaying even without its name in
  the text; a look-alike from another host quoting "(outlook.com)" is not read as Microsoft's.
- Gmail's rate reply at end of DATA (providers_rig's Google emulation, a real
  RateLimit behaviour) suspends "google" when it comes from gmail-smtp-in.l.google.com; the
  same reply from a look-alike host never suspends Google (the generic "rate limited"
  phrase suspends that host alone, as its own provider).
"""

from __future__ import annotations

import dataclasses

import pytest
from sender_rig import BOUNCE_DOMAIN, PREFIX, SENDER_DOMAIN, VERP_KEY, Rig

from outpost.bounces.verp import make_return_path
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import SmtpConnector
from outpost.models import QueueJob
from outpost_local.mx import END_OF_DATA, GMAIL_RATE, RcptReply
from outpost_local.providers_rig import SITES, Emulation, behaviours_for, start_providers

pytestmark = pytest.mark.timeout(120)


def container(rig: Rig, ip: str) -> DeliveryService:
    return DeliveryService(
        settings=dataclasses.replace(rig.settings, sender_ip=ip, throttle_backoff=(4, 8)),
        store=rig.store, suppressions=rig.suppressions, queue=rig.queue, resolve_mx=rig.resolver.resolve,
        connector=SmtpConnector("mta.sender.test", port=rig.smtp_port, ca_bundle=str(rig.pki.ca_bundle),
                                timeouts=rig.timeouts),
        signer_for=lambda domain: rig.signer if domain == SENDER_DOMAIN else None,
        return_path=lambda mid, i: make_return_path(VERP_KEY, mid, i, BOUNCE_DOMAIN),
        clock=rig.clock, rng=rig.rng, suspensions=rig.store)


def _bounced(rig: Rig, to: str) -> dict:
    mid = rig.send(to)
    rig.run_jobs([QueueJob(message_id=mid)])
    r = rig.rcpt(mid)
    assert r["state"] == "bounced", r
    return dict(r["last"])


def test_a_providers_own_texts_count_only_in_replies_from_its_hosts(rig: Rig) -> None:
    rig.service = container(rig, "203.0.113.41")
    # The same reply at RCPT from KDDI's MX host and from any other host.
    kddi = rig.mx("kddi.test", 21, RcptReply(550, ": User unknown"), name="lsean.ezweb.ne.jp")
    plain = rig.mx("plain.test", 22, RcptReply(550, ": User unknown"))
    v = _bounced(rig, "taro@kddi.test")
    assert (v["code"], v["kind"], v["reason"]) == (550, "soft", "filtered"), v
    v = _bounced(rig, "taro@plain.test")
    assert (v["code"], v["kind"], v["reason"]) == (550, "hard", "userunknown"), v
    assert rig.suppressions.suppressed(["taro@kddi.test", "taro@plain.test"]) == {"taro@plain.test"}
    assert kddi.log and plain.log  # both replies came over SMTP from the hosts themselves

    # Microsoft's wording: its own host's reply needs no mark; a look-alike's mark is not enough.
    rig.mx("outlook.test", 23, RcptReply(550, "5.7.1 Unable to relay"), name="outlook-com.olc.protection.outlook.com")
    rig.mx("lookalike.test", 24, RcptReply(550, "5.7.1 Unable to relay (outlook.com)"))
    assert _bounced(rig, "a@outlook.test")["reason"] == "norelaying"
    assert _bounced(rig, "a@lookalike.test")["reason"] == "securityerror"


def test_gmails_throttle_suspends_google_only_from_googles_mx(rig: Rig) -> None:
    ip = "203.0.113.42"
    rig.service = container(rig, ip)
    # One message a minute, then Gmail's reply at end of DATA: the providers_rig emulation,
    # under Google's MX name (gmail.test) and under a look-alike's (lookalike-gmail.test).
    emulation = Emulation(GMAIL_RATE, END_OF_DATA, per_window=1, window=3600.0)
    hosts = start_providers(rig.dns, rig.pki, ip_prefix=PREFIX, port=rig.smtp_port, providers=("google",),
                            emulations={"google": emulation})
    rig.servers.extend(h.server for h in hosts.values())
    (site,) = [s for s in SITES if s.provider == "google"]
    cap, rate, session = behaviours_for(emulation)
    rig.mx("lookalike-gmail.test", 25, [b for b in (cap, session, rate) if b is not None],
           name="mx.lookalike-gmail.test")

    for n in range(2):
        rig.run_jobs([QueueJob(message_id=rig.send(f"u{n}@lookalike-gmail.test"))])
    assert rig.store.suspension(ip, "google") is None  # never Google's for another host's reply
    own = rig.store.suspension(ip, "mx.lookalike-gmail.test")  # the generic "rate limited"
    assert own is not None and own.level == 1
    assert rate is not None and rate.throttled == 1

    for n in range(2):
        rig.run_jobs([QueueJob(message_id=rig.send(f"u{n}@{site.domain}"))])
    google = rig.store.suspension(ip, "google")
    assert google is not None and google.level == 1 and "4.7.28" in google.reply
    assert hosts["google"].counters()["throttled"] == 1 and hosts["google"].counters()["accepted"] == 1
