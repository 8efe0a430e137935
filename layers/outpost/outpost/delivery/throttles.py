"""Which negative replies mean "this provider is throttling your IP" (issue 11 item 4): data,
one row per reply, each with its source. trouble.judge reads it; suspension.py turns a
throttle into a suspension of the provider for this sending IP.

A row matches a 4xx reply (never a 5xx: a permanent refusal is not a throttle, and Microsoft
asks for no retry after a 5xx) by its enhanced status code and/or a phrase in the text, for
one provider (provider_for(mx host)) or for any (`provider=None`: the generic phrases). The
provider is the caller's, from the MX host it spoke to, never guessed from the text.

Its backoff class names the shortest suspension the provider asks for (BACKOFF_MINIMUM); the
growing steps themselves are OUTPOST_THROTTLE_BACKOFF (suspension.py).

Not throttles, on purpose:
- Gmail `421 4.7.0 Try again later, closing connection`: Google's generic answer for TLS
  negotiation trouble, a suspicious message or a low-reputation IP on one connection
  (support.google.com/a/answer/3726730 lists it under several causes). It stays a HOST
  verdict (next MX, then the ordinary retry schedule): suspending all of Google on it would
  stop every Gmail recipient for what is often one connection's problem. Gmail's rate replies
  carry 4.7.28 (or a "rate limited" text, which the generic row catches).
- `452 4.5.3 too many recipients` and `450 4.2.1 ... receiving mail at a rate that prevents
  additional messages` (Gmail, one mailbox receiving too fast): one recipient's limit, not
  the IP's.
- "too many messages in this connection/session": a per-connection cap (KumoMTA's
  max_deliveries_per_connection, shaping.py's business): the session is closed, nothing is
  suspended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Throttle:
    provider: str | None  # provider_for's name; None: any provider (a generic phrase)
    status: str | None  # an enhanced status code, or a regex of them; None: any
    phrase: str | None  # a lower-case regex searched in the reply text; None: any
    backoff: str  # a key of BACKOFF_MINIMUM
    source: str
    commands: tuple[str, ...] = ()  # the stages it applies to; () = every stage


THROTTLES: tuple[Throttle, ...] = (
    # Google: "421-4.7.28 ... Our system has detected an unusual rate of unsolicited mail
    # originating from your IP address ... has been temporarily rate limited" (also for a DKIM
    # or SPF domain). support.google.com/mail/answer/81126 ("sending limits") and
    # support.google.com/a/answer/3726730 (SMTP error reference, 4.7.28).
    Throttle("google", r"4\.7\.28", None, "google", "Google SMTP error reference: 421 4.7.28 rate limited"),
    Throttle("google", None, r"unusual rate of unsolicited mail|temporarily rate limited", "google",
             "Google SMTP error reference: 421 4.7.28 texts, whatever the enhanced code"),
    # Microsoft: "451 4.7.650 The mail server [IP] has been temporarily rate limited due to IP
    # reputation" (learn.microsoft.com, Exchange Online NDR 4.7.650); Exchange Online 4.7.66x
    # (the 451/421 4.7.5xx-6xx family "access denied, try again later" for a throttled IP);
    # outlook.com "421 RP-001/RP-002/RP-003 ... some messages from x.x.x.x weren't sent ... we
    # have limits for how many messages can be sent per hour and per day"
    # (sendersupport.olc.protection.outlook.com/pm/troubleshooting).
    Throttle("microsoft", r"4\.7\.650", None, "microsoft", "Exchange Online NDR 451 4.7.650"),
    Throttle("microsoft", r"4\.7\.66\d", None, "microsoft", "Exchange Online 4.7.66x throttled IP"),
    Throttle("microsoft", None, r"\brp-00[123]\b", "microsoft-hourly",
             "outlook.com postmaster: 421 RP-001/002/003 hourly and daily limits"),
    # Yahoo/AOL: "421 4.7.0 [TSS04] Messages from x.x.x.x temporarily deferred due to unexpected
    # volume or user complaints" (senders.yahooinc.com/smtp-error-codes); KumoMTA's shaping.toml
    # suspends yahoo for 2 hours on TSS04. [TS01]/[TS02] (temporarily deferred) and [TS03]
    # (all messages will be deferred) are the older forms of the same, per Yahoo and KumoMTA.
    Throttle("yahoo", None, r"\[tss0\d\]", "yahoo", "Yahoo SMTP error codes; KumoMTA shaping.toml: TSS04 suspend 2 h"),
    Throttle("yahoo", None, r"\[ts0[123]\]", "yahoo", "Yahoo SMTP error codes TS01-TS03 (KumoMTA)"),
    # Generic phrases (Postfix and KumoMTA operators' lists; any provider, 4xx only).
    Throttle(None, None, r"rate[ -]limit", "generic", "generic: 'rate limit(ed)'"),
    Throttle(None, None, r"throttl", "generic", "generic: 'throttled', 'throttling'"),
    Throttle(None, None, r"too many messages(?! (?:in|on|for|per) (?:this |one |a )?(?:connection|session))",
             "generic", "generic: 'too many messages' (not a per-connection cap)"),
    Throttle(None, None, r"too many (?:concurrent |simultaneous )?connections", "generic",
             "generic: 'too many connections' at the greeting", commands=("CONNECT",)),
)

# The shortest suspension each class asks for, in seconds (the steps grow from there).
BACKOFF_MINIMUM: Mapping[str, int] = {
    "google": 600,  # Google: wait at least 10 minutes, then resume on one connection
    "microsoft": 600,  # Microsoft documents no duration ("retry later"): the first step
    "microsoft-hourly": 3600,  # RP-00x: an hourly limit; an hour before trying again
    "yahoo": 7200,  # KumoMTA shaping.toml: TSS04 suspends yahoo for 2 hours
    "generic": 0,  # the schedule's steps only
}

_COMPILED = tuple((t, re.compile(t.status) if t.status else None, re.compile(t.phrase) if t.phrase else None)
                  for t in THROTTLES)


def throttle_for(provider: str, code: int, status: str | None, text: str, command: str) -> Throttle | None:
    """The row that says this reply (from an MX host of `provider`) is a throttle, or None.
    `text` is already bounded (trouble.py: DIAGNOSTIC_LIMIT); every pattern is linear."""
    if code // 100 != 4:
        return None
    low = text.lower()
    for t, st, ph in _COMPILED:
        if t.provider is not None and t.provider != provider:
            continue
        if t.commands and command not in t.commands:
            continue
        if st is not None and not (status and st.fullmatch(status)):
            continue
        if ph is not None and not ph.search(low):
            continue
        return t
    return None
