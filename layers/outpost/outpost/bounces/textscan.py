"""Apply the family table (families.py) to the human-readable text of a bounce.

Returns, per failed recipient found in the text, the address and the text that explains
the failure.  Used alone for bounces that carry no RFC 3464 part, and to fill in the
diagnostic of RFC 3464 entries that have no Diagnostic-Code field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from outpost.bounces._prefilter import AnchoredAlternation, Prefiltered
from outpost.bounces.families import ADDR, FAMILIES, ORIGINAL_MARKERS, Family

_WS = re.compile(r"\s+")
# Addresses that are never the failed recipient: the bouncing system itself, and a mailing
# list's command address (LIST-request, RFC 2142 section 6; fml's LIST-ctl) that a list
# manager's notice tells the sender to write to.
_SYSTEM_LOCALPARTS = re.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|root|abuse|noreply|no-reply"
    r"|[^@\s]+-(?:request|ctl))@", re.I
)


@dataclass(frozen=True)
class TextHit:
    address: str
    diagnostic: str
    family: str


def cut_original(text: str, fam: Family | None = None) -> str:
    """The part of ``text`` before the copy of the original message."""
    cut = _marker_at(text)
    if fam is not None and fam.end is not None:
        m = fam.end.search(text, 0, cut)
        if m:
            cut = m.start()
    return text[:cut]


_MARKERS = AnchoredAlternation(ORIGINAL_MARKERS)


@lru_cache(maxsize=8)
def _marker_at(text: str) -> int:
    # The same text is cut several times per message (once per family tried).
    start = _MARKERS.start(text)
    return len(text) if start is None else start


_DETECT = tuple((fam, Prefiltered(fam.detect)) for fam in FAMILIES)
_ALL_DETECT = _DETECT
# Rows switched off by rows_disabled(): family rows by name, plus "mda" (families.MDA_AGENTS)
# and "powermta" (families.POWERMTA_CATEGORY), the other per-family tables.
_DISABLED: frozenset[str] = frozenset()
# The rows that know no family: what is left when every family row is switched off.
GENERIC_ROWS = frozenset({"generic", "fallback"})
FAMILY_ROWS = frozenset(f.name for f in FAMILIES) - GENERIC_ROWS | {"mda", "powermta"}


def row_enabled(name: str) -> bool:
    return name not in _DISABLED


@contextmanager
def rows_disabled(names: Iterable[str]) -> Iterator[None]:
    """Parse as if the named family rows did not exist (bench/bounce_score.py measures how
    the parser does on a family it has no row for: the leave-one-family-out score).
    Process-wide and not thread-safe: for measurement, not for the bounce processor."""
    global _DETECT, _DISABLED
    saved = _DISABLED
    _DISABLED = frozenset(names)
    _DETECT = tuple(row for row in _ALL_DETECT if row[0].name not in _DISABLED)
    families_detected.cache_clear()
    try:
        yield
    finally:
        _DISABLED = saved
        _DETECT = tuple(row for row in _ALL_DETECT if row[0].name not in _DISABLED)
        families_detected.cache_clear()


@lru_cache(maxsize=4)
def families_detected(probe: str) -> tuple[Family, ...]:
    """The rows whose ``detect`` pattern matches ``probe``, in table order."""
    low = probe.lower()
    return tuple(fam for fam, rx in _DETECT if rx.found(probe, low))


def detect_family(probe: str) -> Family | None:
    found = families_detected(probe)
    return found[0] if found else None


def _join(lines: list[str]) -> str:
    # The lines' words joined by one space each: str.split() and strip() know the same
    # whitespace as re's "\s" (Py_UNICODE_ISSPACE), so this is
    # _WS.sub(" ", " ".join(s.strip() for s in lines)).strip() without a regex.
    return " ".join(" ".join(lines).split())


# A header line of the original that a bounce quotes above its verdict ("Your message\n
#   To: list@x\n  Subject: ...\n  Sent: ..." in Exchange, GroupWise and IMail texts).
_QUOTED_HEADER = re.compile(r"^[^\S\n]{0,20}(?:To|CC|Bcc|Date|Subject|Sent|From)[^\S\n]{0,20}:",
                            re.I)


def _drop_quoted_headers(lines: list[str]) -> list[str]:
    """``lines`` without runs of two or more consecutive quoted header lines: the To: of
    the original is where the mail was addressed (often a list), not who failed."""
    # Every such line has a ":": the pattern runs only on those.
    quoted = [":" in ln and _QUOTED_HEADER.match(ln) is not None for ln in lines]
    if sum(quoted) < 2:
        return lines
    keep = [True] * len(lines)
    n = len(lines)
    i = 0
    while i < n:
        j = i
        while j < n and quoted[j]:
            j += 1
        if j - i >= 2:
            for k in range(i, j):
                keep[k] = False
        i = max(j, i + 1)
    return [ln for ln, k in zip(lines, keep, strict=True) if k]


def scan_with(fam: Family, text: str, exclude: frozenset[str] = frozenset()) -> list[TextHit]:
    """Find recipients in ``text`` with one family's patterns: the row's error section,
    the recipient lines in it with the lines that explain each, then a diagnostic each."""
    lines = _section_lines(fam, text)
    hits = _recipient_lines(fam, lines, exclude)
    return _explained(fam, lines, hits)


def _section_lines(fam: Family, text: str) -> list[str]:
    """The lines of the row's error section: from its ``begin`` marker (keeping the line
    the marker is on: some MTAs put the address there) to its ``end`` or the original."""
    section = cut_original(text, fam)
    if fam.begin is not None:
        m = fam.begin.search(section)
        if m:
            section = section[section.rfind("\n", 0, m.start()) + 1:]
    lines = _drop_quoted_headers(section.split("\n"))
    if fam.skip is not None:
        lines = [ln for ln in lines if not fam.skip.search(ln)]
    return lines


def _match_recipient(fam: Family, line: str, exclude: frozenset[str]) -> re.Match[str] | None:
    if len(line) >= 1000 or "@" not in line:  # every rcpt pattern needs an address
        return None
    for rx in fam.rcpt:
        m = rx.search(line)
        if m:
            addr = m.group("addr").strip(".")
            if addr.lower() in exclude or (
                    not fam.system_addresses and _SYSTEM_LOCALPARTS.match(addr)):
                continue
            return m
    return None


def _recipient_lines(fam: Family, lines: list[str], exclude: frozenset[str]
                     ) -> list[tuple[str, list[str]]]:
    """(address, its explanation lines) per recipient line, in order (repeats included)."""
    hits: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in lines:
        matched = _match_recipient(fam, line, exclude)
        if matched is not None and current is not None and hits and (
                hits[-1][0].lower() == matched.group("addr").strip(".").lower()):
            matched = None  # the address repeated inside its own explanation
        if matched is not None:
            diag = matched.groupdict().get("diag") or ""
            current = [diag] if diag.strip() else []
            hits.append((matched.group("addr").strip("."), current))
        elif current is None:
            continue
        elif not line.strip():
            # A blank line right after the address line may precede its explanation
            # (Exim, Yahoo); a second one ends the entry.
            if not current or current[-1] != "":
                current.append("")
            else:
                current = None
        elif fam.continuation:
            current.append(line)
    return hits


def _explained(fam: Family, lines: list[str], hits: list[tuple[str, list[str]]]
               ) -> list[TextHit]:
    """One TextHit per address, its diagnostic from its own lines, the row's section, or
    (lacking an SMTP reply) the reply the section gives it elsewhere."""
    out: list[TextHit] = []
    seen: set[str] = set()
    whole = _join(lines) if (fam.section_diagnostic or fam.whole_section) else ""
    replies: dict[str, str] | None = None
    for addr, diag_lines in hits:
        key = addr.lower()
        if key in seen:
            continue
        seen.add(key)
        diag = _join([s for s in diag_lines if s])
        if fam.whole_section or (fam.section_diagnostic and not diag):
            diag = whole
        if not _HAS_REPLY.search(diag):
            # The recipient's own lines carry no SMTP reply: look for one elsewhere in the
            # error section (a transcript, a "Technical details" paragraph).
            if replies is None:
                replies = replies_by_address(lines)
            found = replies.get(key) or (replies.get("") if len(hits) == 1 else None)
            if found:
                diag = f"{diag} {found}".strip() if diag and not fam.whole_section else found
            elif not diag and len(hits) == 1:
                # One recipient and no words of its own: the lines right above its address
                # explain it ("User not listed in public Name & Address Book\nrcpt").
                diag = _paragraph_above(lines, key)
        out.append(TextHit(addr, diag, fam.name))
    return out


# An SMTP reply in a bounce text: a reply code (RFC 5321 section 4.2) at the start of a
# line or after a transcript's "<<<", or a reply code with an enhanced status (RFC 3463)
# anywhere ("host x said: 550 5.1.1 ...").
#   (?:^|<<<|\bsaid:|\s)[45][0-5]\d[ -]|\b[45][0-5]\d[ -][245]\.\d{1,3}\.
# written to start with the first digit, what comes before it asserted behind it (the engine
# skips to the digits; the same answer: test_bounce_speed).
_HAS_REPLY = re.compile(r"[45](?:(?:(?<![^\s].)|(?<=<<<.)|(?<=\bsaid:.))[0-5]\d[ -]"
                        r"|(?<!\w.)[0-5]\d[ -][245]\.\d{1,3}\.)")
_REPLY_LINE = re.compile(
    r"^[^\S\n]{0,40}(?:<<<|Error:|Reason:|Remote host said:)?[^\S\n]{0,5}[45][0-5]\d[ -]"
    r"|\b[45][0-5]\d[ -]#?[245]\.\d{1,3}\.\d{1,3}\b")
_RCPT_LINE = re.compile(r"^[^\S\n]{0,40}(?:>>>[^\S\n]{0,5})?RCPT[^\S\n]+TO:", re.I)
# The lookbehind lets a match start only where a run of local-part characters starts (as
# dsn._ADDR_RE): without it a long run with no "@" is rescanned from each of its positions.
_LINE_ADDR = re.compile(r"(?<![^\s<>()\[\]\"',;:@=])" + ADDR)
_ABOVE_LINES = 3


def _paragraph_above(lines: list[str], address: str) -> str:
    """The non-blank lines (at most _ABOVE_LINES) right above the line that holds nothing
    but ``address``, when they are not a list heading ("...following recipients:")."""
    for i, line in enumerate(lines):
        if line.strip().strip("<>").lower() == address:
            above: list[str] = []
            j = i - 1 if i and not lines[i - 1].strip() else i  # one blank line between
            for prev in reversed(lines[max(0, j - _ABOVE_LINES):j]):
                if not prev.strip():
                    break
                above.insert(0, prev)
            text = _join(above)
            return "" if text.endswith(":") else text
    return ""


# Lines of a multi-line reply after its first ("550-..." continues, "550 ..." ends).
_REPLY_LINES_LIMIT = 8


def replies_by_address(lines: list[str]) -> dict[str, str]:
    """SMTP replies in ``lines`` keyed by the lower-case address they answer: the reply on
    a line that names the address ("<bob@x>: host mx said: 550 ..."), or the reply lines
    after a transcript's "RCPT TO:<bob@x>" ("<<< 550 5.1.1 ...").  Key "" holds the first
    reply of the section, for a bounce that names one recipient.  One pass over ``lines``."""
    out: dict[str, str] = {}
    pending: list[str] = []  # addresses of a RCPT TO line waiting for its reply
    command = ""  # that line: it says which command the reply answers
    n = len(lines)
    i = 0
    while i < n:
        line = lines[i]
        if len(line) > 1000:
            i += 1
            continue
        if _RCPT_LINE.search(line):
            pending = [m.group(0).lower() for m in _LINE_ADDR.finditer(line)]
            command = line.strip()
            i += 1
            continue
        if not _REPLY_LINE.search(line):
            i += 1
            continue
        j = i + 1
        while (j < n and j - i < _REPLY_LINES_LIMIT and lines[j - 1].lstrip("< ")[3:4] == "-"
               and _REPLY_LINE.search(lines[j])):
            j += 1  # "550-5.1.1 first line" / "550 5.1.1 last line"
        reply = _join(lines[i:j])
        out.setdefault("", reply)
        for addr in pending:
            out.setdefault(addr.strip("."), f"{command} {reply}")
        for m in _LINE_ADDR.finditer(line):
            out.setdefault(m.group(0).lower().strip("."), reply)
        pending = []
        i = j
    return out


def scan_text(probe: str, text: str, exclude: frozenset[str] = frozenset()
              ) -> tuple[Family | None, list[TextHit]]:
    """Detect the family from ``probe`` (headers + start of body) and scan ``text``."""
    for fam in families_detected(probe):
        hits = scan_with(fam, text, exclude)
        if hits:
            return fam, hits
    return None, []


def diagnostic_for(address: str, text: str) -> str:
    """The text near a mention of ``address`` in a human-readable part (for DSN entries
    without a Diagnostic-Code field): the lines from the mention to the next blank line."""
    section = cut_original(text)
    low = section.lower()
    i = low.find(address.lower())
    if i < 0:
        return ""
    start = section.rfind("\n", 0, i) + 1
    end = section.find("\n\n", i)
    if end < 0:
        end = len(section)
    chunk = section[start:end]
    # Include the explanation after a "<addr>:" line followed by indented reply lines.
    if chunk.strip().endswith(":") and end < len(section):
        nxt = section.find("\n\n", end + 2)
        chunk += " " + section[end:nxt if nxt > 0 else len(section)]
    return _join(chunk.split("\n"))[:2000]
