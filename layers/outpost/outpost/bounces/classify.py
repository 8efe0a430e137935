"""Classify one failed recipient: (kind, reason) from a status code and a diagnostic text.

Shared by the bounce processor (DSNs) and by the sender (synchronous SMTP rejections), so
it is pure and cheap: all patterns are compiled once at import.

The vocabulary and the decision order follow Sisimai 4.25 (``Sisimai::Reason``), the
reference bounce analyser, so that our suppression decisions can be compared with it:

* ``kind`` is about the *address*: "hard" means the address itself is bad (userunknown,
  hostunknown, hasmoved, and notaccept on a 5xx); "soft" means it may work later or after a
  fix on the sender's side (mailboxfull, blocked, filtered, expired...); "unknown" is for
  things that are not failures at all (delivered, feedback, vacation).
* The RFC 3463 status gives a first guess (``STATUS_REASON``); phrases in the diagnostic
  refine it, because many MTAs send generic codes such as 5.0.0 or 5.7.1 for everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from outpost.bounces import _phrases, _vendor
from outpost.bounces._prefilter import PhraseRegex
from outpost.bounces.limits import DIAGNOSTIC_LIMIT

__all__ = ["classify", "kind_for_reason", "reply_code_from_text", "status_from_text"]

# RFC 3463 / RFC 5248 enhanced status codes -> reason (Sisimai::SMTP::Status).
STATUS_REASON: dict[str, str] = {
    "2.1.5": "delivered",
    "4.1.6": "hasmoved", "4.1.7": "rejected", "4.1.8": "rejected", "4.1.9": "systemerror",
    "4.2.1": "suspend", "4.2.2": "mailboxfull", "4.2.3": "exceedlimit", "4.2.4": "filtered",
    "4.3.1": "systemfull", "4.3.2": "notaccept", "4.3.3": "systemerror",
    "4.3.5": "systemerror", "4.4.1": "expired", "4.4.2": "networkerror",
    "4.4.4": "networkerror", "4.4.5": "systemfull", "4.4.6": "networkerror",
    "4.4.7": "expired", "4.5.3": "systemerror", "4.5.5": "systemerror",
    "4.6.0": "contenterror", "4.6.2": "contenterror", "4.6.5": "contenterror",
    "4.7.1": "blocked", "4.7.2": "blocked", "4.7.5": "securityerror",
    "4.7.6": "securityerror", "4.7.7": "securityerror", "4.7.12": "securityerror",
    "4.7.15": "securityerror", "4.7.16": "mesgtoobig", "4.7.24": "securityerror",
    "4.7.25": "blocked",
    "5.1.0": "userunknown", "5.1.1": "userunknown", "5.1.2": "hostunknown",
    "5.1.3": "userunknown", "5.1.4": "filtered", "5.1.6": "hasmoved", "5.1.7": "rejected",
    "5.1.8": "rejected", "5.1.9": "systemerror", "5.1.10": "notaccept",
    "5.2.0": "filtered", "5.2.1": "filtered", "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit", "5.2.4": "filtered",
    "5.3.0": "systemerror", "5.3.1": "systemfull", "5.3.2": "notaccept",
    "5.3.3": "systemerror", "5.3.4": "mesgtoobig", "5.3.5": "systemerror",
    "5.4.0": "networkerror", "5.4.3": "systemerror", "5.4.4": "hostunknown",
    "5.5.3": "toomanyconn", "5.5.4": "systemerror", "5.5.5": "systemerror",
    "5.5.6": "securityerror",
    "5.6.0": "contenterror", "5.6.1": "contenterror", "5.6.2": "contenterror",
    "5.6.3": "contenterror", "5.6.5": "contenterror", "5.6.6": "contenterror",
    "5.6.7": "contenterror", "5.6.8": "contenterror", "5.6.9": "contenterror",
    "5.7.0": "securityerror", "5.7.1": "securityerror", "5.7.2": "securityerror",
    "5.7.3": "securityerror", "5.7.4": "securityerror", "5.7.5": "securityerror",
    "5.7.6": "securityerror", "5.7.7": "securityerror", "5.7.8": "securityerror",
    "5.7.9": "securityerror", "5.7.10": "securityerror", "5.7.11": "securityerror",
    "5.7.13": "suspend", "5.7.14": "securityerror", "5.7.15": "securityerror",
    "5.7.16": "mesgtoobig", "5.7.17": "hasmoved", "5.7.18": "hasmoved",
    "5.7.19": "securityerror", "5.7.20": "securityerror", "5.7.21": "securityerror",
    "5.7.22": "securityerror", "5.7.23": "securityerror", "5.7.24": "securityerror",
    "5.7.25": "blocked", "5.7.26": "securityerror", "5.7.27": "notaccept",
}

HARD_REASONS = frozenset({"hasmoved", "hostunknown", "userunknown"})
NOT_FAILURES = frozenset({"delivered", "feedback", "vacation"})
# Reasons worth a second look at the text (Sisimai::Reason->retry): they are what a
# generic status code maps to, so a phrase may say something more precise.
_RETRY = frozenset(
    {"undefined", "onhold", "systemerror", "securityerror", "networkerror", "hostunknown",
     "userunknown"}
)

# --- status and reply-code extraction ---------------------------------------------------
# RFC 3463 section 2: class "." subject "." detail; a code embedded in an IP address or a
# version number ("5.1.1.2") is not a status.  Order: "#5.1.1" (Exchange), "550-5.1.1" /
# "550 5.1.1" (RFC 2034 style reply), then any bare code.
# A leading "\b" before a digit is written "D(?<!\w.)": the digit first, then "no word
# character before it" (the same matches; test_bounce_speed), so that the regex engine skips
# to the digits instead of trying "\b" at every position.
_STATUS_RES = (
    re.compile(r" ?\(#([45]\.\d\.\d{1,3})\)? ?"),
    re.compile(r"\d(?<!\w.)\d\d[ -]['\"]?#?([45]\.\d\.\d{1,3})\b"),  # \b\d{3}[ -]['\"]?#?...
    re.compile(r"([45](?<!\w.)\.\d\.\d{1,3})\b"),  # \b([45]\.\d\.\d{1,3})\b
    re.compile(r"(2(?<!\w.)\.[0-7]\.[0-7])\b"),  # \b(2\.[0-7]\.[0-7])\b
)
_IPV4 = re.compile(r"\d(?<!\w.)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}\b")  # \b(?:\d{1,3}\.){3}\d{1,3}\b
_REPLY_RE = re.compile(r"([45](?<!\w.)[0-5][0-9])\b")  # \b([45][0-5][0-9])\b
_REPLY_OK_RE = re.compile(r"(2(?<!\w.)5[0-3])\b")  # \b(25[0-3])\b


# The extractors below have a few entries of cache each: one recipient's diagnostic is asked
# about by the DSN parser and again by classify() (pure functions of the text).
@lru_cache(maxsize=4)
def status_from_text(text: str) -> str | None:
    """Extract an RFC 3463 enhanced status code ("5.1.1") from a diagnostic, or None."""
    if not text:
        return None
    for rx in _STATUS_RES:
        if rx is _STATUS_RES[0] and "(#" not in text:
            continue  # its only literal
        for m in rx.finditer(text):
            code = m.group(1)
            # Reject a match that is really part of a longer dotted number (IP, version).
            s, e = m.span(1)
            if (e < len(text) and text[e] == "." and text[e + 1 : e + 2].isdigit()) or (
                s > 0 and text[s - 1] == "." and text[s - 2 : s - 1].isdigit()
            ):
                continue
            return code
    return None


@lru_cache(maxsize=4)
def reply_code_from_text(text: str) -> int | None:
    """Extract a basic SMTP reply code (RFC 5321 section 4.2) from a diagnostic, or None."""
    if not text or "x-unix;" in text.lower():
        return None
    text = _IPV4.sub("***", text)
    m = _REPLY_RE.search(text) or _REPLY_OK_RE.search(text)
    return int(m.group(1)) if m else None


# --- phrase matchers ---------------------------------------------------------------------
def _matcher(name: str) -> Callable[[str], bool]:
    index = _phrases.INDEX.get(name, ())
    # The big alternations run only where a literal they need occurs (_prefilter): an
    # alternation of a hundred phrases is otherwise tried at every position of the text.
    regex = PhraseRegex(_phrases.REGEX[name]) if name in _phrases.REGEX else None
    isnot = _phrases.ISNOT.get(name, ())

    # A few entries: one classification asks about the same diagnostic several times
    # (Sisimai's ClassOrder tries a reason's phrases from more than one rule).
    @lru_cache(maxsize=4)
    def match(text: str) -> bool:
        # Plain loops, not any(<generator>): a generator costs more than the "in" tests.
        for p in isnot:
            if p in text:
                return False
        for p in index:
            if p in text:
                return True
        return regex is not None and regex.search(text)

    return match


_ALL = (
    "blocked contenterror exceedlimit expired filtered hasmoved hostunknown mailboxfull "
    "mailererror mesgtoobig networkerror norelaying notaccept policyviolation rejected "
    "securityerror spamdetected suspend systemerror systemfull toomanyconn userunknown "
    "vacation virusdetected"
).split()
MATCH: dict[str, Callable[[str], bool]] = {n: _matcher(n) for n in _ALL}

# Sisimai::Reason ClassOrder: [0] status+text checks, [1] text-only fallback.
_ORDER0 = (
    "mailboxfull mesgtoobig exceedlimit suspend hasmoved norelaying userunknown filtered "
    "rejected hostunknown spamdetected toomanyconn blocked"
).split()
_ORDER1 = (
    "mailboxfull spamdetected policyviolation virusdetected norelaying securityerror "
    "systemerror networkerror suspend expired contenterror systemfull notaccept mailererror"
).split()
_USERUNKNOWN_VETO = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept")
_EARLY_COMMANDS = frozenset({"CONN", "EHLO", "HELO", "MAIL", "RCPT"})


_BARE_VERDICT = 40
_BARE_USERUNKNOWN = re.compile(r"(?:unknown user|user unknown|no such user|invalid recipient"
                               r"|unknown recipient|recipient unknown)")


def _true_userunknown(temp: str, diag: str, cmd: str, reply: str) -> bool:
    m = MATCH
    if temp == "suspend":
        return False
    if temp == "userunknown":
        for v in _USERUNKNOWN_VETO:
            if m[v](diag):
                return False
        return True
    # A "no such user" text counts only as a reply to RCPT: after DATA it is often a
    # content filter in disguise (Sisimai's rule), which "filtered" catches.
    if cmd == "RCPT":
        return m["userunknown"](diag)
    # A bare verdict with no reply and no command ("Unknown user: rcpt", IMail / SMTP32 and
    # other small MTAs): the reporting MTA's own judgement of its own mailbox, not a
    # relayed reply that a content filter may have sent after DATA.
    return (not cmd and not reply and len(diag) <= _BARE_VERDICT
            and _BARE_USERUNKNOWN.fullmatch(diag.strip(" .")) is not None)


def _true_filtered(temp: str, diag: str, cmd: str) -> bool:
    m = MATCH
    if temp == "suspend":
        return False
    if temp == "filtered":
        return m["userunknown"](diag) or m["filtered"](diag)
    if cmd in _EARLY_COMMANDS:
        return False
    return m["filtered"](diag) or m["userunknown"](diag)


def _true_rejected(temp: str, diag: str, cmd: str) -> bool:
    m = MATCH
    t = temp or "undefined"
    if t == "rejected":
        return True
    if cmd == "MAIL":
        return m["rejected"](diag)
    if cmd == "DATA":
        return t != "userunknown" and m["rejected"](diag)
    if t in ("onhold", "undefined", "securityerror", "systemerror"):
        return m["rejected"](diag)
    return False


def _true(name: str, status: str, temp: str, diag: str, cmd: str, reply: str) -> bool:
    """One ``Sisimai::Reason::*->true``: does this reason fit the status, text and command?"""
    m = MATCH
    if name == "mailboxfull":
        return bool(status) and (temp == "mailboxfull" or m["mailboxfull"](diag))
    if name == "mesgtoobig":
        if temp == "mesgtoobig":
            return True
        if temp == "exceedlimit" or status == "5.2.3":
            return False
        return m["mesgtoobig"](diag)
    if name == "exceedlimit":
        return bool(status) and (temp == "exceedlimit" or m["exceedlimit"](diag))
    if name == "suspend":
        return bool(status) and m["suspend"](diag)
    if name == "hasmoved":
        return m["hasmoved"](diag)
    if name == "norelaying":
        return cmd not in ("CONN", "EHLO", "HELO") and m["norelaying"](diag)
    if name == "userunknown":
        return _true_userunknown(temp, diag, cmd, reply)
    if name == "filtered":
        return _true_filtered(temp, diag, cmd)
    if name == "rejected":
        return _true_rejected(temp, diag, cmd)
    if name == "hostunknown":
        if temp == "hostunknown":
            return not m["networkerror"](diag)
        return m["hostunknown"](diag)
    if name == "spamdetected":
        if not status:
            return False
        if temp == "spamdetected":
            return True
        return cmd not in _EARLY_COMMANDS and m["spamdetected"](diag)
    if name == "toomanyconn":
        return temp == "toomanyconn" or m["toomanyconn"](diag)
    if name == "blocked":
        return temp == "blocked" or m["blocked"](diag)
    return False


def _another(status: str, temp: str, diag: str, action: str, cmd: str, reply: str,
             dtype: str) -> str:
    """Fallback when no status+text rule fired (Sisimai::Reason->anotherone)."""
    reason = temp
    if not (reason == "" or reason == "expired" or reason in _RETRY or dtype != "SMTP"):
        return reason
    for name in _ORDER1:
        if MATCH[name](diag):
            return name
    if _BLOCK_WORDS.search(diag):
        # A plain "blocked" / blocklist reply: the sending site is refused (soft), which is
        # more precise than the "securityerror" a generic 5.7.x would give below.
        return "blocked"
    if reason:
        # No phrase said otherwise: the status code's own meaning stands (Sisimai's
        # "last(TRY_TO_MATCH) if $reasontext"), e.g. 5.2.2 with "x-unix; input/output error".
        return reason
    head = status[:3]
    if head in ("4.6", "5.6"):
        return "contenterror"
    if head in ("4.7", "5.7"):
        return "securityerror"
    if dtype in ("X-UNIX", "X-POSTFIX"):
        return "mailererror"
    if re.fullmatch(r"[45]0[0-7]", reply):
        return "syntaxerror"
    if action in ("delayed", "expired"):
        return "expired"
    if cmd in ("EHLO", "HELO"):
        return "blocked"
    return reason if reason not in _RETRY else ""


_WS = re.compile(r"\s+")
_BLOCK_WORDS = re.compile(r"\bblock(?:ed|listed)\b|\bblacklisted\b|\bdnsbl\b|\brbl\b")


def reason_for(status: str | None, diagnostic: str | None, action: str | None = None,
               reply_code: int | None = None, command: str | None = None,
               diagnostic_type: str | None = None) -> str:
    """The Sisimai reason name for one recipient (see module docstring)."""
    st = status or ""
    if st.startswith("2."):
        return "delivered"
    diag = _WS.sub(" ", (diagnostic or "").lower())
    cmd = (command or "").upper()
    reply = str(reply_code) if reply_code else ""
    dtype = (diagnostic_type or "SMTP").upper()
    act = (action or "").lower()
    temp = STATUS_REASON.get(st, "")
    if dtype == "SMTP":
        for name in _ORDER0:
            if _true(name, st, temp, diag, cmd, reply):
                return name
    reason = _another(st, temp, diag, act, cmd, reply, dtype)
    if reason and reason != "undefined":
        return reason
    if act in ("delayed", "expired"):
        return "expired"
    if MATCH["vacation"](diag):
        return "vacation"
    if diag.strip():
        return "onhold"
    return "undefined"


def kind_for_reason(reason: str, status: str | None = None, reply_code: int | None = None) -> str:
    """hard | soft | unknown for a reason (Sisimai::SMTP::Error->soft_or_hard)."""
    if reason in NOT_FAILURES:
        return "unknown"
    if reason in HARD_REASONS:
        return "hard"
    if reason == "notaccept":
        # RFC 7505 null MX is permanent (hard); a 4xx "not accepting" is a busy site (soft).
        first = (status or "")[:1] or (str(reply_code)[:1] if reply_code else "")
        return "soft" if first == "4" else "hard"
    return "soft"


def classify(status: str | None, diagnostic: str | None, action: str | None = None,
             reply_code: int | None = None, *, command: str | None = None,
             diagnostic_type: str | None = None, provider: str | None = None) -> tuple[str, str]:
    """Return ``(kind, reason)`` for one failed recipient or one SMTP reply.

    ``status`` is the RFC 3463 code if known; when it is missing or generic (x.0.0) the
    code found in ``diagnostic`` is used instead (RFC 3463 section 3.1: x.0.0 says nothing).
    ``command`` is the SMTP command the reply answered (MAIL, RCPT, DATA...), if known.
    ``provider`` is who runs the host that replied, when known (a live reply: its MX host's
    provider), so a provider's own texts are read only in its replies (_vendor).
    """
    st = status or ""
    if diagnostic and len(diagnostic) > DIAGNOSTIC_LIMIT:
        # Only the start of a reply is read: its code and first lines say what it means, and
        # a hostile server's megabyte of text must not cost more than a real reply.
        diagnostic = diagnostic[:DIAGNOSTIC_LIMIT]
    if diagnostic and (not st or st.endswith(".0.0") or st not in STATUS_REASON):
        found = status_from_text(diagnostic)
        if found and (not st or found[0] == st[0] or st.endswith(".0.0")):
            if found not in ("4.0.0", "5.0.0") or not st:
                st = found
    if reply_code is None and diagnostic:
        reply_code = reply_code_from_text(diagnostic)
    if not command and diagnostic:
        command = command_from_text(diagnostic)
    reason = reason_for(st or None, diagnostic, action, reply_code, command, diagnostic_type)
    if reason in _vendor.OVERRIDABLE:
        # A vendor's own wording or code ("... IB607", "RESOLVER.ADR.RecipientNotFound")
        # says more than a generic status code.
        reason = _vendor.vendor_reason(diagnostic or "", provider) or reason
    return kind_for_reason(reason, st or None, reply_code), reason


# (pattern, lower-case literals one of which every match contains: the pattern runs only
# if one occurs, as most texts name no command and these patterns are tried everywhere).
_COMMAND_RES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    # (Postfix wraps its text part at 78 columns: the words may be split across lines)
    (re.compile(r"in reply to\s{1,8}(?:end\s{1,8}of\s{1,8})?(DATA|RCPT|MAIL|EHLO|HELO|QUIT)\b",
                re.I), ("in reply to",)),
    (re.compile(r"\b(?:after|in response to) (?:end of )?(DATA|RCPT|MAIL|EHLO|HELO)\b", re.I),
     ("after ", "in response to ")),
    (re.compile(r"\b(RCPT|MAIL) (?:TO|FROM)\b", re.I), ("rcpt to", "mail from")),
    # "SMTP:RCPT host 192.0.2.1: 553 ..." (Sendmail-style X3 relays name the command so)
    (re.compile(r"\bSMTP:(RCPT|MAIL|DATA)\b"), ("smtp:",)),
    (re.compile(r"does not like (recipient)\b", re.I), ("does not like ",)),
)


@lru_cache(maxsize=4)
def command_from_text(text: str) -> str | None:
    """The SMTP command a diagnostic says it answered ("in reply to RCPT TO command")."""
    low = text.lower()
    for rx, gates in _COMMAND_RES:
        for g in gates:
            if g in low:
                break
        else:
            continue
        m = rx.search(text)
        if m:
            cmd = m.group(1).upper()
            return "RCPT" if cmd == "RECIPIENT" else cmd
    return None
