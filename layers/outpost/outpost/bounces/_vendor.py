"""Vendor wordings and reply codes that name a bounce reason unambiguously.

Used by classify() (so the sender's reading of a synchronous SMTP reply agrees with the bounce
processor's reading of the same reply in a DSN) and by the DSN parser.  Sources: the vendors'
published reply texts, as collected in Sisimai's Rhost modules (BSD-2-Clause).
"""

from __future__ import annotations

import re
from functools import lru_cache

from outpost.bounces import _providers
from outpost.bounces._prefilter import Prefiltered

_F = re.I | re.M


def _r(p: str) -> re.Pattern[str]:
    return re.compile(p, _F)


# Vendor wordings that name the reason unambiguously, whatever the family or status code
# says (many of these MTAs send the generic 5.0.0).  Checked before the generic rules.
VENDOR_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Google
    (_r(r"because the address couldn't be found|The email account that you tried to "
        r"reach does not exist"), "userunknown"),
    (_r(r"The email account that you tried to reach is (?:disabled|inactive)"), "suspend"),
    (_r(r"is over (?:its|the) storage (?:allowance|quota)|inbox is out of storage space"),
     "mailboxfull"),
    # Google's own delivery reports (Gmail, Google Workspace) on DNS and connection
    # failures (Sisimai::Lhost::Gmail / GSuite document the wording)
    (_r(r"DNS Error: (?:Domain name not found|DNS server returned answer with no data)"),
     "hostunknown"),
    (_r(r"DNS Error: Could not contact DNS servers|The recipient server did not accept our "
        r"requests to connect"), "expired"),
    (_r(r"DNS Error: .{0,200}(?:responded with code NXDOMAIN|had no relevant answers)"),
     "networkerror"),
    # Google Groups: the group does not exist or takes no posts from the sender
    (_r(r"the group you tried to contact \(\S+\) may not exist, or you may not have "
        r"permission to post"), "rejected"),
    # RFC 7505: a null MX ("MX 0 .") says the domain accepts no mail at all
    (_r(r"\bnull MX\b"), "notaccept"),
    # Lotus Notes / Domino, Ipswitch IMail, Novell GroupWise
    (_r(r"not listed in (?:Domino|public Name & Address) (?:Directory|Book)|Invalid final delivery "
        r"userid|No such user found in the GroupWise"), "userunknown"),
    # Microsoft Exchange Online's resolver verdicts (Sisimai::Rhost::ExchangeOnline)
    (_r(r"RESOLVER\.ADR\.(?:RecipientNotFound|ExRecipNotFound)"), "userunknown"),
    # Exim's verdict when a deferred address outlives its retry rules (Sisimai::Lhost::Exim):
    # the last reply it quotes is a 4xx, the "retry timeout exceeded" is what failed it
    (_r(r"\bretry timeout exceeded"), "expired"),
    # Mailing list managers refusing a post: the sender is not subscribed (fml, Majordomo,
    # Mailman, Sympa), or fml's loop guard saw the Message-ID before (Sisimai::Lhost::FML)
    (_r(r"not a member of (?:this|the) (?:mailing )?list|only members (?:can|may) post"),
     "rejected"),
    (_r(r"\bDuplicated Message-ID\b"), "systemerror"),
    # Tencent QQ (Sisimai::Rhost::TencentQQ wording)
    (_r(r"(?:ip|domain|sender|connection) frequency limited"), "toomanyconn"),
)

# Vendor reply codes printed inside the SMTP reply text: (pattern with one group, code ->
# reason).  GoDaddy (secureserver.net) ends each refusal with an "IBnnn" code documented by
# GoDaddy (table as in Sisimai::Rhost::GoDaddy); the code is more precise than the status.
VENDOR_CODES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(r"\s(IB\d{3})\b"), _providers.GODADDY_CODES),
    # Microsoft Exchange 5.5/2000/2003's Internet Mail Service prints its own diagnostic
    # code in parentheses ("MSEXCH:IMS:... 0 (000C05A6) Unknown Recipient"); the code's
    # meaning is Microsoft's, whichever gateway relays the report (as listed in
    # Sisimai::Lhost::Exchange2003).  The codes that only say "see the remote reply" (000B099C,
    # 000B09AA, 000B09B6) are left out: the reply text says more.
    (re.compile(r"\((000[0-9A-F]{5})\)"), {
        "000C05A6": "userunknown", "000C0595": "filtered", "00010256": "systemerror",
        "000D06B5": "systemerror", "00050311": "contenterror", "000502CC": "contenterror",
        "000B0981": "securityerror",
    }),
    # I.UA links its error page, "http://mail.i.ua/err/N" (table in _providers.py)
    (re.compile(r"\.i\.ua/err/(\d{1,2})\b"), _providers.IUA_CODES),
)

# Spectrum (Charter) ends its refusals with "AUP#I-nnnn" (incoming) or "AUP#O-nnnn"
# (outgoing): the number's reason is in _providers.SPECTRUM_AUP.
_SPECTRUM_AUP = re.compile(r"AUP#[-A-Za-z]*(\d{4})\b")


def _spectrum_reason(diagnostic: str) -> str | None:
    m = _SPECTRUM_AUP.search(diagnostic) if "AUP#" in diagnostic else None
    if m is None:
        return None
    n = int(m.group(1))
    return next((r for lo, hi, r in _providers.SPECTRUM_AUP if lo <= n <= hi), None)


# A provider's reply as it reaches us: "550-5.7.26 text 550-5.7.26 more text" (a multi-line
# reply folded onto one line).  The first code pair is the reply; the continuation prefixes
# are dropped before the provider's wording is looked up, as they split its sentences.
# (A leading "\b" written after the first digit, as in classify: the same matches.)
_REPLY_AND_STATUS = re.compile(r"([245](?<!\w.)\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CONTINUATION = re.compile(r"\s[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3})?(?=\s)")
_COX_AUP = re.compile(r"AUP#([0-9A-Z]+)")
_FRANCE_PTT = re.compile(r"\b(?:LPN|LPNAAA|OFR|OUK)(?:_\d{3}|\d{3}[-_]\d{3})\b", re.I)
_LEADING_REPLY = re.compile(r"([245](?<!\w.)\d\d)\b")
# Where the reply shows whose it is (their help links and host names are in nearly every
# reply they send): some of their texts ("user unknown") are everybody's words, and mean
# the provider's documented reason only in the provider's reply.
_GOOGLE_MARK = re.compile(r"google|gmail|gsmtp")
_MICROSOFT_MARK = re.compile(r"outlook|microsoft|hotmail|live\.com|office ?365|exchange online")


def _provider_code(diagnostic: str, low: str) -> str | None:
    """A provider's own code at the end of its reply: Cox's "AUP#CXBL", Orange's and La
    Poste's "OFR004_405" / "LPN007_426" (tables in _providers.py)."""
    if "AUP#" in diagnostic:
        m = _COX_AUP.search(diagnostic)
        if m and m.group(1) in _providers.COX_AUP:
            return _providers.COX_AUP[m.group(1)]
    m = _FRANCE_PTT.search(diagnostic) if ("lpn" in low or "ofr" in low or "ouk" in low) else None
    if m:
        return _providers.FRANCE_PTT.get(m.group(0)[-3:], "undefined")
    return None


def _provider_reply(diagnostic: str, provider: str | None = None) -> str | None:
    """A reply text a provider documents, checked with the codes it comes with (Google,
    Microsoft, Mimecast) or the provider's name beside it (Tencent QQ).

    `provider`: who runs the host that sent the reply, when the caller knows it (the sender:
    delivery/providers.provider_for of the MX it spoke to). Then a provider's texts are read
    only in its own host's reply, whatever the text names: a look-alike from another host
    ("... gsmtp", "(outlook.com)") is read by the generic rules, and the provider's reply is
    read as the provider's even when it names no mark. Without it (a DSN, whose reporting
    MTA may relay), the marks in the text decide, as before."""
    low = diagnostic.lower()
    m = _REPLY_AND_STATUS.search(low)
    if m:
        reply, status = int(m.group(1)), m.group(2)
        if provider is None:
            google = _GOOGLE_MARK.search(low) is not None
            microsoft = _MICROSOFT_MARK.search(low) is not None
        else:
            google, microsoft = provider == "google", provider == "microsoft"
        # (the phrases are looked up only in a provider's own reply)
        text = _CONTINUATION.sub(" ", low) if google or microsoft else ""
        for g_reply, g_status, phrase, reason in _providers.GOOGLE if google else ():
            if g_reply == reply and g_status == status and phrase in text:
                return reason
        detail = int(status.rsplit(".", 1)[1])
        for prefix, lo, hi, phrase, reason in _providers.MICROSOFT if microsoft else ():
            if (status == prefix if lo == hi else (
                    status.startswith(prefix) and lo <= detail <= hi)) and phrase in text:
                return reason
    lead = _LEADING_REPLY.search(low) if provider in (None, "mimecast") else None
    if lead:
        code = int(lead.group(1))
        for m_reply, phrase, reason in _providers.MIMECAST:
            if m_reply == code and phrase in low:
                return reason
    if ("qq.com" in low) if provider is None else provider == "tencent":
        for phrase, reason in _providers.TENCENT:
            if phrase in low:
                return reason
    return None


def provider_of_host(host: str | None) -> str | None:
    """The provider whose MX host ``host`` is ("mfsmax.docomo.ne.jp [192.0.2.1]" ->
    "nttdocomo"), by the names in _providers.PROVIDER_HOSTS, or None."""
    if not host:
        return None
    words = host.split(None, 1)
    name = words[0].rstrip(".").lower() if words else ""
    for pattern, provider in _providers.PROVIDER_HOSTS:
        if (name.endswith(pattern) if pattern.startswith(".") else name == pattern):
            return provider
    return None


def host_reason(host: str | None, status: str | None, diagnostic: str,
                command: str | None = None) -> str | None:
    """The reason a provider's own reply means when it comes from the provider's host
    (GoDaddy, KDDI, NTT DOCOMO: tables in _providers.py), or None.  Their wordings are
    everybody's words elsewhere, so they are read only in a reply from their hosts."""
    provider = provider_of_host(host)
    if provider is None:
        return None
    low = diagnostic.lower()
    if provider == "godaddy":
        # (its "IBnnn" code first, as GoDaddy's page lists: the code is the more precise)
        m = VENDOR_CODES[0][0].search(diagnostic) if "IB" in diagnostic else None
        if m and m.group(1) in _providers.GODADDY_CODES:
            return _providers.GODADDY_CODES[m.group(1)]
        return next((r for text, r in _providers.GODADDY_TEXTS if text in low), None)
    if provider == "kddi":
        return next((r for text, r in _providers.KDDI_TEXTS if text in low), None)
    # NTT DOCOMO: the status first, then its documented texts, then the command
    found = _providers.NTTDOCOMO_STATUS.get(status or "")
    found = found or next((r for text, r in _providers.NTTDOCOMO_TEXTS if text in low), None)
    if found is None and status == "5.0.0" and command:
        found = _providers.NTTDOCOMO_COMMAND.get(command.upper())
    return found


# Reasons a vendor verdict may replace: what generic status codes and phrases map to.
OVERRIDABLE = frozenset({
    "undefined", "onhold", "systemerror", "securityerror", "networkerror", "userunknown",
    "hostunknown", "filtered", "rejected", "expired", "blocked", "suspend",
})


# The phrase patterns behind a literal pre-check (most replies contain none of them), and
# the literal every code pattern's match contains.
_PHRASES_PREFILTERED = tuple((Prefiltered(rx), reason) for rx, reason in VENDOR_PHRASES)
_CODE_GATES = ("IB", "(000", "i.ua/err/")


@lru_cache(maxsize=1)
def vendor_reason(diagnostic: str, provider: str | None = None) -> str | None:
    """The reason a vendor-specific phrase or code in ``diagnostic`` names, or None.
    (One-entry cache: the DSN parser and classify() ask about the same reply in turn.)
    `provider`: who runs the replying host, if known (_provider_reply); codes that name their
    provider (GoDaddy's IBnnn, Cox's AUP#, ...) are read in any reply."""
    if not diagnostic:
        return None
    low = diagnostic.lower()
    found = None
    for pre, reason in _PHRASES_PREFILTERED:
        if pre.search(diagnostic, low):
            found = reason
            break
    for (crx, codes), gate in zip(VENDOR_CODES, _CODE_GATES, strict=True):
        m = crx.search(diagnostic) if gate in diagnostic else None
        if m and m.group(1) in codes:
            return codes[m.group(1)]
    return (_spectrum_reason(diagnostic) or _provider_code(diagnostic, low)
            or _provider_reply(diagnostic, provider) or found)
