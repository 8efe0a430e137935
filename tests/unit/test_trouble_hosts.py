"""Host-aware live verdicts (issue 11 review, item 4): trouble.judge(event, provider, host=)
reads a provider's own reply texts only when the reply came from that provider's MX host
(delivery/providers.provider_for, and for GoDaddy/KDDI/NTT DOCOMO the DSN parser's host
table); generic patterns apply to every host. Without a host (a DSN's reading), the text's
own marks decide, as before. The same replies over real SMTP: tests/integration/test_sender_host_aware.py."""

from __future__ import annotations

import pytest

from outpost.bounces.classify import classify
from outpost.delivery.providers import provider_for
from outpost.delivery.trouble import Scope, SmtpReply, judge
from outpost.errors import ReplyError, StageError

OUTLOOK_MX = "outlook-com.olc.protection.outlook.com"
GMAIL_MX = "gmail-smtp-in.l.google.com"
KDDI_MX = "lsean.ezweb.ne.jp"
DOCOMO_MX = "mfsmax.docomo.ne.jp"
MIMECAST_MX = "eu-smtp-inbound-1.mimecast.com"
OTHER_MX = "mx.example.net"


@pytest.mark.parametrize(("code", "text", "command", "own_host", "own", "other"), [
    # KDDI: "550 : User unknown" without the address is the recipient's filter (soft);
    # everybody else's "User unknown" at RCPT is an unknown user (hard).
    (550, ": User unknown", "RCPT", KDDI_MX, ("soft", "filtered"), ("hard", "userunknown")),
    # NTT DOCOMO: "550 Unknown user" at DATA is its filter refusing the sender.
    (550, "Unknown user", "EOD", DOCOMO_MX, ("soft", "rejected"), ("soft", "filtered")),
    # Microsoft's wording, with or without its name in the text.
    (550, "5.7.1 Unable to relay", "RCPT", OUTLOOK_MX, ("soft", "norelaying"), ("soft", "securityerror")),
    # Mimecast's documented texts (Sisimai::Rhost::Mimecast), from its hosts only.
    (550, "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550", "RCPT", MIMECAST_MX,
     ("hard", "userunknown"), None),
])
def test_a_providers_texts_apply_to_its_own_hosts_replies(code: int, text: str, command: str, own_host: str,
                                                          own: tuple[str, str],
                                                          other: tuple[str, str] | None) -> None:
    v = judge(SmtpReply(code, text, command), provider_for(own_host), host=own_host)
    assert (v.kind, v.reason) == own
    w = judge(SmtpReply(code, text, command), provider_for(OTHER_MX), host=OTHER_MX)
    if other is not None:
        assert (w.kind, w.reason) == other
    # The exception the transport raises says the same, and so does a StageError around it.
    assert judge(ReplyError(code, text, command), None, host=own_host) == v
    assert judge(StageError(command, ReplyError(code, text, command)), None, host=own_host).reason == v.reason


@pytest.mark.parametrize(("code", "text", "provider_reading"), [
    # A look-alike naming Microsoft from another host: read by the generic rules there.
    (550, "5.7.1 Unable to relay (outlook.com)", "norelaying"),
    # Google's wording with its "gsmtp" mark, from a host that is not Google's.
    (550, "5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited "
          "the mail that you sent. gsmtp", "policyviolation"),
])
def test_a_look_alike_from_another_host_is_not_read_as_the_providers(code: int, text: str,
                                                                     provider_reading: str) -> None:
    assert judge(SmtpReply(code, text, "RCPT")).reason == provider_reading  # no host: a DSN's reading
    assert judge(SmtpReply(code, text, "RCPT"), OTHER_MX, host=OTHER_MX).reason != provider_reading
    # The provider's own host reads it as the provider documents.
    host = OUTLOOK_MX if "outlook" in text else GMAIL_MX
    assert judge(SmtpReply(code, text, "RCPT"), provider_for(host), host=host).reason == provider_reading


def test_generic_patterns_and_self_naming_codes_apply_to_any_host() -> None:
    # A generic throttle phrase suspends whoever sent it, under its own name.
    v = judge(SmtpReply(450, "4.7.1 Rate limit exceeded, try again later", "RCPT"), OTHER_MX, host=OTHER_MX)
    assert v.scope is Scope.PROVIDER and v.provider == OTHER_MX and v.backoff == "generic"
    # Another provider's throttle wording from this host is not a throttle (throttles.py rows).
    v = judge(SmtpReply(421, "4.7.0 [TSS04] Messages temporarily deferred", "RCPT"), OTHER_MX, host=OTHER_MX)
    assert v.scope is not Scope.PROVIDER
    # GoDaddy's IBnnn code names its provider: read in any host's reply.
    v = judge(SmtpReply(554, "5.7.1 Connection refused, sending IP listed IB103", "RCPT"), OTHER_MX, host=OTHER_MX)
    assert v.reason == "blocked"
    # Generic phrases classify everywhere ("mailbox full").
    v = judge(SmtpReply(552, "5.2.2 Mailbox full", "RCPT"), provider_for(GMAIL_MX), host=GMAIL_MX)
    assert (v.kind, v.reason) == ("soft", "mailboxfull")


def test_without_a_host_the_classifier_reads_as_before() -> None:
    # The DSN parser's reading (no host): the text's marks name the provider.
    assert classify("5.7.1", "550 5.7.1 Unable to relay (outlook.com)", "failed", 550, command="RCPT") == (
        "soft", "norelaying")
    assert classify("5.7.1", "550 5.7.1 Unable to relay (outlook.com)", "failed", 550, command="RCPT",
                    provider=OTHER_MX)[1] != "norelaying"
