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

from outpost.bounces._prefilter import Prefiltered
from outpost.bounces.families import FAMILIES, ORIGINAL_MARKERS, Family

_WS = re.compile(r"\s+")
# Addresses that are never the failed recipient: the bouncing system itself.
_SYSTEM_LOCALPARTS = re.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|root|abuse|noreply|no-reply)@", re.I
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


@lru_cache(maxsize=8)
def _marker_at(text: str) -> int:
    # The same text is cut several times per message (once per family tried).
    m = ORIGINAL_MARKERS.search(text)
    return m.start() if m else len(text)


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
    return tuple(fam for fam, rx in _DETECT if rx.search(probe, low))


def detect_family(probe: str) -> Family | None:
    found = families_detected(probe)
    return found[0] if found else None


def _join(lines: list[str]) -> str:
    return _WS.sub(" ", " ".join(s.strip() for s in lines)).strip()


def scan_with(fam: Family, text: str, exclude: frozenset[str] = frozenset()) -> list[TextHit]:
    """Find recipients in ``text`` with one family's patterns."""
    section = cut_original(text, fam)
    if fam.begin is not None:
        m = fam.begin.search(section)
        if m:
            # Keep the line the marker is on: some MTAs put the address on it.
            start = section.rfind("\n", 0, m.start()) + 1
            section = section[start:]
    lines = section.split("\n")
    if fam.skip is not None:
        lines = [ln for ln in lines if not fam.skip.search(ln)]
    hits: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in lines:
        matched = None
        if len(line) < 1000 and "@" in line:  # every rcpt pattern needs an address
            for rx in fam.rcpt:
                m = rx.search(line)
                if m:
                    addr = m.group("addr").strip(".")
                    if addr.lower() in exclude or (
                            not fam.system_addresses and _SYSTEM_LOCALPARTS.match(addr)):
                        continue
                    matched = m
                    break
        if matched is not None and current is not None and hits and (
                hits[-1][0].lower() == matched.group("addr").strip(".").lower()):
            matched = None  # the address repeated inside its own explanation
        if matched is not None:
            addr = matched.group("addr").strip(".")
            diag = matched.groupdict().get("diag") or ""
            current = [diag] if diag.strip() else []
            hits.append((addr, current))
            continue
        if current is None:
            continue
        if not line.strip():
            # A blank line right after the address line may precede its explanation
            # (Exim, Yahoo); a second one ends the entry.
            if current and current[-1] != "":
                current.append("")
            elif not current:
                current.append("")
            else:
                current = None
            continue
        if fam.continuation:
            current.append(line)
    out: list[TextHit] = []
    seen: set[str] = set()
    whole = _join(lines) if (fam.section_diagnostic or fam.whole_section) else ""
    for addr, diag_lines in hits:
        key = addr.lower()
        if key in seen:
            continue
        seen.add(key)
        diag = _join([s for s in diag_lines if s])
        if fam.whole_section or (fam.section_diagnostic and not diag):
            diag = whole
        out.append(TextHit(addr, diag, fam.name))
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
