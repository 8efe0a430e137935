"""Issue 11 item 4: throttle replies are their own verdict (trouble.judge with the provider,
throttles.py's table), and the suspension policy (suspension.py): levels, minimums, decay,
the ramp after a suspension."""

from __future__ import annotations

import pytest

from outpost.config import Settings
from outpost.delivery.providers import Limits, provider_for
from outpost.delivery.suspension import (
    Policy,
    connection_cap,
    duration,
    forget_at,
    level_after,
    next_suspension,
)
from outpost.delivery.throttles import BACKOFF_MINIMUM, THROTTLES
from outpost.delivery.trouble import Outcome, Scope, SmtpReply, judge, tries_next_mx
from outpost.errors import ReplyError
from outpost.records import Suspension

GMAIL_MX = "gmail-smtp-in.l.google.com"
OUTLOOK_MX = "example-com.mail.protection.outlook.com"
HOTMAIL_MX = "hotmail-com.olc.protection.outlook.com"
YAHOO_MX = "mta5.am0.yahoodns.net"

# Each provider's throttle reply, as the provider words it, with the MX that sends it.
THROTTLE_REPLIES = [
    (GMAIL_MX, 421, "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
                    "originating from your IP address. To protect our users from spam, mail sent from "
                    "your IP address has been temporarily rate limited.", "RCPT", "google", "google"),
    (GMAIL_MX, 421, "4.7.28 Gmail has detected an unusual rate of mail originating from your DKIM domain",
     "EOD", "google", "google"),
    (OUTLOOK_MX, 451, "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to "
                      "IP reputation.", "RCPT", "microsoft", "microsoft"),
    (OUTLOOK_MX, 421, "4.7.662 Access denied, please try again later", "MAIL", "microsoft", "microsoft"),
    (HOTMAIL_MX, 421, "RP-001 (BAY004-MC1F31) Unfortunately, some messages from 192.0.2.1 weren't sent. "
                      "Please try again. We have limits for how many messages can be sent per hour and per day.",
     "RCPT", "microsoft", "microsoft-hourly"),
    (HOTMAIL_MX, 421, "RP-003 (COL004-MC4F13) Unfortunately, some messages weren't sent.", "MAIL",
     "microsoft", "microsoft-hourly"),
    (YAHOO_MX, 421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
                    "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     "CONNECT", "yahoo", "yahoo"),
    (YAHOO_MX, 421, "4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints",
     "RCPT", "yahoo", "yahoo"),
    (YAHOO_MX, 421, "4.7.0 [TS03] All messages from 192.0.2.1 will be permanently deferred", "MAIL",
     "yahoo", "yahoo"),
    ("mx.example.net", 450, "4.7.1 Rate limit exceeded, try again later", "RCPT", "mx.example.net", "generic"),
    ("mx.example.net", 451, "4.3.0 You are being throttled", "EOD", "mx.example.net", "generic"),
    ("mx.example.net", 452, "4.3.1 Too many messages from your host", "MAIL", "mx.example.net", "generic"),
    ("mx.example.net", 421, "4.7.0 Too many connections from your IP", "CONNECT", "mx.example.net", "generic"),
]


@pytest.mark.parametrize(("mx", "code", "text", "command", "provider", "backoff"), THROTTLE_REPLIES)
def test_each_providers_throttle_reply_is_a_provider_verdict(
        mx: str, code: int, text: str, command: str, provider: str, backoff: str) -> None:
    assert provider_for(mx) == provider
    v = judge(SmtpReply(code, text, command), provider_for(mx))
    assert (v.outcome, v.scope, v.provider, v.backoff) == (Outcome.TRANSIENT, Scope.PROVIDER, provider, backoff)
    assert v.code == code and v.command == command
    assert not tries_next_mx(v)  # the provider throttles the IP, not one of its hosts
    # The exception the transport raises for it says the same.
    assert judge(ReplyError(code, text, command), provider) == v
    # Without a provider named, the same reply keeps its old (pre-issue-11) verdict.
    assert judge(SmtpReply(code, text, command)).scope is not Scope.PROVIDER


@pytest.mark.parametrize(("mx", "code", "text", "command"), [
    # Gmail's generic: TLS trouble, a suspicious message, low reputation on one connection.
    (GMAIL_MX, 421, "4.7.0 Try again later, closing connection. (EHLO)", "EHLO"),
    (GMAIL_MX, 421, "4.7.0 Try again later, closing connection.", "RCPT"),
    # One mailbox receiving too fast (Gmail 4.2.1) and too many recipients: the recipient's.
    (GMAIL_MX, 450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
                    "additional messages from being delivered.", "RCPT"),
    ("mx.example.net", 452, "4.5.3 Too many recipients", "RCPT"),
    # A per-connection cap: close and reconnect (shaping's business), nothing suspended.
    ("mx.example.net", 421, "4.7.0 Too many messages in this connection", "MAIL"),
    # "Too many connections" counts at the greeting only.
    ("mx.example.net", 452, "4.3.2 too many connections to this mailbox", "RCPT"),
    # A permanent refusal is never a throttle (Microsoft: no retry after a 5xx).
    (OUTLOOK_MX, 550, "5.7.650 rate limited", "RCPT"),
    # Another provider's wording from a host that is not theirs is not their throttle.
    ("mx.example.net", 421, "4.7.0 [TSS04] deferred", "RCPT"),
    (OUTLOOK_MX, 421, "4.7.28 unusual", "RCPT"),
])
def test_replies_that_are_not_throttles(mx: str, code: int, text: str, command: str) -> None:
    v = judge(SmtpReply(code, text, command), provider_for(mx))
    assert v.scope is not Scope.PROVIDER and v.provider is None


def test_every_row_has_a_source_and_a_known_backoff_class() -> None:
    assert all(t.source and t.backoff in BACKOFF_MINIMUM for t in THROTTLES)
    assert BACKOFF_MINIMUM["yahoo"] == 7200 and BACKOFF_MINIMUM["google"] >= 600


def test_the_verdict_is_recorded_with_its_provider() -> None:
    v = judge(SmtpReply(421, "4.7.28 rate limited", "RCPT"), "google")
    assert v.as_dict()["scope"] == "provider" and v.as_dict()["provider"] == "google"


# ---- the policy ------------------------------------------------------------------------------
POLICY = Policy(steps=(600, 1800, 3600, 7200, 14400), ramp=120)
T0 = 1_000_000.0


def _s(until: float, level: int) -> Suspension:
    return Suspension(ip="192.0.2.1", provider="google", until=until, level=level, reply="421", since=until - 600)


def test_levels_grow_on_a_throttle_soon_after_and_decay_after_quiet_periods() -> None:
    assert level_after(None, T0, POLICY) == 1
    assert level_after(_s(T0, 1), T0 + 60, POLICY) == 2  # throttled again soon after resuming
    assert level_after(_s(T0, 4), T0 + 14399, POLICY) == 5
    assert level_after(_s(T0, 3), T0 + 14400, POLICY) == 3  # one quiet period: one level down, +1
    assert level_after(_s(T0, 3), T0 + 3 * 14400, POLICY) == 1  # long quiet: back to the start
    assert level_after(_s(T0, 3), T0 - 1, POLICY) == 3  # still suspended: no change


def test_durations_follow_the_steps_capped_with_provider_minimums() -> None:
    assert [duration(n, "generic", POLICY) for n in range(1, 8)] == [600, 1800, 3600, 7200, 14400, 14400, 14400]
    assert duration(1, "yahoo", POLICY) == 7200  # KumoMTA: TSS04 suspends for 2 h
    assert duration(5, "yahoo", POLICY) == 14400
    assert duration(1, "microsoft-hourly", POLICY) == 3600
    # A shortened schedule (tests, benches) shortens the minimums too: capped by its longest step.
    short = Policy(steps=(2, 4))
    assert duration(1, "google", short) == 2 and duration(1, "yahoo", short) == 4  # 600/300, 7200/300 capped
    assert duration(1, "generic", short) == 2 and duration(3, "generic", short) == 4
    # divided by K (a bench's --time-scale): the minimums are divided by K too
    halved = Policy(steps=(300, 900, 1800, 3600, 7200))
    assert duration(1, "google", halved) == 300 and duration(1, "yahoo", halved) == 3600
    assert duration(1, "microsoft-hourly", halved) == 1800


def test_a_throttle_during_a_suspension_changes_nothing() -> None:
    running = _s(T0 + 100, 2)
    assert next_suspension(running, "192.0.2.1", "google", "google", "421", T0, POLICY) is None
    new = next_suspension(_s(T0, 1), "192.0.2.1", "google", "google", "421 4.7.28 " + "x" * 900, T0 + 10, POLICY)
    assert new is not None and (new.level, new.until, new.since) == (2, T0 + 10 + 1800, T0 + 10)
    assert len(new.reply) == 500  # bounded
    assert forget_at(new, POLICY) == new.until + 2 * 14400


def test_after_a_suspension_one_connection_then_one_more_per_ramp_step() -> None:
    limits = Limits(connections=5, per_connection=50)
    s = _s(T0, 1)
    assert connection_cap(None, limits, T0) == 5
    assert connection_cap(s, limits, T0 - 1) == 0
    caps = [connection_cap(s, limits, T0 + t, ramp=120) for t in (0, 119, 120, 240, 359, 480, 10_000)]
    assert caps == [1, 1, 2, 3, 3, 5, 5]


def test_the_schedule_is_a_setting() -> None:
    s = Settings.from_env({"OUTPOST_THROTTLE_BACKOFF": "2,4,8", "OUTPOST_THROTTLE_RAMP": "0.5"})
    assert s.throttle_backoff == (2, 4, 8) and s.throttle_ramp == 0.5
    d = Settings.from_env({})
    assert d.throttle_backoff == (600, 1800, 3600, 7200, 14400) and d.throttle_ramp == 120
