"""The bounce parser's faster readings (issue 10 item 5) answer as the plain code they
replace: each is checked against that code, kept here as the reference, on the texts of
every corpus and golden file and on edge cases."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from outpost.bounces import dsn

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path("/work/shared/corpus/bounces")


def _texts() -> list[str]:
    paths = sorted((ROOT / "tests/golden/bounces").rglob("*.eml"))
    paths += sorted(p for p in CORPUS.rglob("*") if p.suffix in (".eml", ".txt"))
    out: list[str] = []
    for path in paths:
        msg = dsn._read_message(path.read_bytes())
        if msg is not None:
            b = dsn._sort_parts(msg)
            out += [b.text, b.before_original, *b.ds_texts, *b.feedback]
    return out


# Lines made of the pieces a field reader cares about: names, blanks of each kind, colons.
_PIECES = ("Status", "status", ":", " ", "\t", "\n", "\r", "\x0b", "\x85", "5.1.1", "x")
EDGES = ["".join(p) for n in range(1, 6) for p in itertools.product(_PIECES, repeat=n)]


def _fields_by_line(text: str) -> list[tuple[str, str]]:
    """dsn._fields as it was: _FIELD_RE matched on each line."""
    out: list[tuple[str, str]] = []
    lines = text.split("\n")
    i = 0
    n = len(lines)
    while i < n:
        m = dsn._FIELD_RE.match(lines[i])
        if not m:
            i += 1
            continue
        name, value = m.group(1).lower(), m.group(2).strip()
        i += 1
        while i < n and lines[i][:1] in (" ", "\t") and lines[i].strip():
            value += " " + lines[i].strip()
            i += 1
        out.append((name, value))
    return out


def test_fields_as_read_line_by_line() -> None:
    texts = _texts()
    assert sum(bool(dsn._fields(t)) for t in texts) > 300
    for text in texts + EDGES + ["Status: 5.1.1\n  folded\n\t more\n \nAction: failed\n x",
                                 "Action\n: failed", "Status:\n5.1.1", "\nStatus:  x  "]:
        assert dsn._fields(text) == _fields_by_line(text), text[:80]
    assert re.search(r"\\s", dsn._FIELD_AT.pattern) is None  # "\s" would cross lines


def test_join_as_the_whitespace_pattern() -> None:
    from outpost.bounces import textscan

    blanks = [chr(c) for c in range(0x110000) if re.fullmatch(r"\s", chr(c))]
    assert blanks == [chr(c) for c in range(0x110000) if chr(c).isspace()]
    lines = [line for t in _texts() for line in t.split("\n")]
    cases = [lines[i:i + 7] for i in range(0, len(lines), 7)]
    cases += [[f"{a}x{b}", f"{b}y{a}", a] for a in blanks for b in (" ", "", "\u3000\t")]
    for case in cases:
        assert textscan._join(case) == textscan._WS.sub(
            " ", " ".join(s.strip() for s in case)).strip()


# classify's code patterns with the leading "\b" moved after the first digit, beside the
# patterns they were.
_BOUNDARY_FIRST = {
    r"\b\d{3}[ -]['\"]?#?([45]\.\d\.\d{1,3})\b": 1, r"\b([45]\.\d\.\d{1,3})\b": 2,
    r"\b(2\.[0-7]\.[0-7])\b": 3,
}


def test_code_patterns_match_as_with_a_leading_boundary() -> None:
    import importlib

    cls = importlib.import_module("outpost.bounces.classify")  # the module, not the function
    pairs = [(re.compile(old), cls._STATUS_RES[i]) for old, i in _BOUNDARY_FIRST.items()]
    pairs += [(re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), cls._IPV4),
              (re.compile(r"\b([45][0-5][0-9])\b"), cls._REPLY_RE),
              (re.compile(r"\b(25[0-3])\b"), cls._REPLY_OK_RE)]
    texts = [line for t in _texts() for line in t.split("\n")]
    pieces = ("5", "2", "0", "1", ".", " ", "-", "a", "#", "\u0665", "_", "\n")
    texts += ["".join(p) for n in range(1, 6) for p in itertools.product(pieces, repeat=n)]
    for old, new in pairs:
        for text in texts:
            assert [m.regs for m in old.finditer(text)] == [m.regs for m in new.finditer(text)]


def test_reply_patterns_answer_as_they_were_written() -> None:
    from outpost.bounces import _vendor, textscan

    texts = [line for t in _texts() for line in t.split("\n")] + [t[:3000] for t in _texts()]
    pieces = ("5", "4", "2", "0", ".", " ", "-", "<<<", "said:", "xsaid:", "a", "\n", "\t")
    texts += ["".join(p) for n in range(1, 6) for p in itertools.product(pieces, repeat=n)]
    has_reply = re.compile(r"(?:^|<<<|\bsaid:|\s)[45][0-5]\d[ -]|\b[45][0-5]\d[ -][245]\.\d{1,3}\.")
    pairs = [(re.compile(r"\b([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})\b"), _vendor._REPLY_AND_STATUS),
             (re.compile(r"\b([245]\d\d)\b"), _vendor._LEADING_REPLY)]
    for text in texts:
        assert bool(has_reply.search(text)) == bool(textscan._HAS_REPLY.search(text)), text
        for old, new in pairs:
            assert [m.regs for m in old.finditer(text)] == [m.regs for m in new.finditer(text)]


def test_family_hint_as_every_row_searched() -> None:
    from outpost.bounces.families import FAMILIES

    lines = [line for t in _texts() for line in t.split("\n") if line.strip()]
    texts = lines + [x.upper() for x in lines] + ["mailbox is full \u017f", "x"]
    for fam in FAMILIES:
        if not fam.reasons:
            continue
        for text in texts:
            want = next((str(r) for rx, r in fam.reasons if rx.search(text)), None)
            assert dsn._family_hint(fam, text) == want, (fam.name, text)
    assert any(dsn._family_hint(f, t) for f in FAMILIES for t in lines)
