"""The split alternations of _prefilter (issue 10 item 5) answer as the whole pattern does:
Prefiltered.found() is bool(pattern.search()) for every family detect pattern, and
AnchoredAlternation.start() is the start of ORIGINAL_MARKERS' leftmost match, on the text
of every corpus and golden file (and on texts made to hit each alternative)."""

from __future__ import annotations

import re
from pathlib import Path

from outpost.bounces import dsn, textscan
from outpost.bounces._prefilter import AnchoredAlternation, Prefiltered
from outpost.bounces.families import FAMILIES, ORIGINAL_MARKERS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path("/work/shared/corpus/bounces")


def _texts() -> list[str]:
    paths = sorted((ROOT / "tests/golden/bounces").rglob("*.eml"))
    paths += sorted(p for p in CORPUS.rglob("*") if p.suffix in (".eml", ".txt"))
    out = []
    for path in paths:
        msg = dsn._read_message(path.read_bytes())
        if msg is not None:
            b = dsn._sort_parts(msg)
            out += [b.probe, b.text]
    # Lines made to start with the markers' wordings, after text that does not match.
    out += ["x\n" + w for w in ("---- Original message follows", "  ----- Unsent message -----",
                                "Content-Type: message/rfc822", "The original message was",
                                "Bla bla: Below is a copy of the original message:",
                                "-- Originalnachricht", "ORIGINAL MESSAGE FOLLOWS",
                                "-- Urspr\u00fcngliche Nachricht", "--- \u5143\u306e\u30e1\u30c3\u30bb\u30fc\u30b8")]
    return out


def test_found_is_the_whole_patterns_answer() -> None:
    texts = _texts()
    split = [Prefiltered(f.detect) for f in FAMILIES]
    assert sum(p.alternatives is not None for p in split) >= len(split) - 2
    for pre in split:
        for text in texts:
            assert pre.found(text) == bool(pre.pattern.search(text)), pre.pattern.pattern[:60]


def test_anchored_alternation_finds_the_leftmost_start() -> None:
    markers = AnchoredAlternation(ORIGINAL_MARKERS)
    assert markers.parts is not None and textscan._MARKERS.parts is not None
    hits = 0
    for text in _texts():
        m = ORIGINAL_MARKERS.search(text)
        assert markers.start(text) == (m.start() if m else None)
        hits += m is not None
    assert hits > 100


def test_patterns_that_cannot_be_split_are_searched_whole() -> None:
    for p in (r"^(?:a)|(?:b)", r"^(?:(\w)\1)"):
        alt = AnchoredAlternation(re.compile(p, re.I | re.M))
        assert alt.parts is None and alt.start("x\naa") == re.search(p, "x\naa", re.I | re.M).start()
    counted = Prefiltered(re.compile(r"abcdef|.{0,40}(?:ghij|klmn)", re.I))
    assert counted.found("-- KLMN") and not counted.found("nothing")


def test_line_start_is_where_the_anchored_search_starts() -> None:
    # _LineStart: "^X" (re.M) as X at 0 or "\nX" after it; "^" holds after "\n" only
    # (not after "\r" or other str.splitlines() breaks), and a lookbehind still sees the
    # text before the line.
    from outpost.bounces._prefilter import _LineStart

    patterns = [r"^Subject: (?:a|b)", r"^From:.*daemon", r"^(?<=\n)x", r"^-+ ?copy", r"^$",
                r"^\s*tail"]
    texts = ["Subject: a", "x\nSubject: b\n", "x\rSubject: a", "x\x0bSubject: a", "x", "\n",
             "---- copy\n-- copy", "a\nFrom: the daemon\n", "\n\n  tail", "", "x\n\nx",
             "subject: A\nSUBJECT: B"]
    for p in patterns:
        for flags in (re.M, re.M | re.I):
            rx = re.compile(p, flags)
            lines = _LineStart.of(p, flags)
            assert lines is not None
            for text in texts:
                m = rx.search(text)
                assert lines.start(text) == (m.start() if m else None), (p, text)
    assert _LineStart.of("^x", re.I) is None  # "^": the start of the text only
    assert _LineStart.of("x^", re.M) is None


def test_literal_start_is_where_the_search_starts() -> None:
    # _LiteralStart: X tried only where its leading literal occurs; under re.I only for
    # ASCII text (str.lower() keeps positions and agrees with re.I there), the rest searched.
    from outpost.bounces._prefilter import _literal_prefix, _LiteralStart

    assert _literal_prefix(r"delivery (?:has )?failed") == "delivery "
    assert _literal_prefix(r"MSEXCH:") == "MSEXCH:"
    assert _literal_prefix(r"could not be delivered\. This\s+is") == "could not be delivered. This"
    assert _literal_prefix(r"abcd?e") == "abc" and _literal_prefix(r"abcd+e") == "abcd"
    assert _literal_prefix(r"abcd{2}") == "abc" and _literal_prefix(r"\babcd") == ""
    patterns = [r"delivery (?:has )?failed", r"m-FILTER", r"could not be delivered\.\s+x",
                r"kelvin (?:k|s)$", r"aaaa(?=b)"]
    texts = ["Delivery failed", "x DELIVERY HAS FAILED\ndelivery failed", "m-filter M-FILTER",
             "could not be delivered.\n x", "kelvin \u212a", "kelvin k", "kelvin \u017f",
             "\u0130 delivery failed", "aaaa" * 40 + "b", "aaaa" * 40, "", "delivery"]
    for p in patterns:
        for flags in (0, re.I, re.I | re.M):
            rx = re.compile(p, flags)
            start = _LiteralStart.of(p, flags)
            assert start is not None, p
            for text in texts:
                m = rx.search(text)
                assert start.start(text) == (m.start() if m else None), (p, flags, text)
    assert _LiteralStart.of("abc", re.I) is None  # shorter than MIN: searched whole


def test_quick_alternatives_run_together_and_the_least_start_wins() -> None:
    from outpost.bounces._prefilter import _starts_with_a_literal

    assert [_starts_with_a_literal(a) for a in ("-{2,}x", "-{0,2}x", "a{,3}", "-+x", "ab",
                                                "[a]b", "a?b", "a*", ".{0,40}x", "(?:a|b)")] == [
        True, False, False, True, True, False, False, False, False, False]
    p = re.compile(r"^(?:-{2,} ?quick one|[^\S\n]*slow one|Another quick|.{0,5}far slow)",
                   re.I | re.M)
    alt = AnchoredAlternation(p)
    assert alt.quick is not None and alt.parts is not None and len(alt.parts) == 2
    texts = ["x\n  slow one\n-- quick one", "x\n--quick one\n slow one", "ANOTHER QUICK",
             "ab far slow\nanother quick", "-\n- quick one\nnone", "", "\n\n  slow one"]
    for text in texts:
        m = p.search(text)
        assert alt.start(text) == (m.start() if m else None), text


def test_lazy_dot_star_keeps_whether_and_where_a_match_is() -> None:
    from outpost.bounces._prefilter import _lazy_dot_star

    assert _lazy_dot_star(r"^Subject:.*(?:a|b)") == r"^Subject:.*?(?:a|b)"
    for kept in (r"a\.*b", r"x.*?y", r"x.*+y", r"(?>a.*)b", r"(a).*\1", r"[.*]"):
        assert _lazy_dot_star(kept) == kept
    texts = ["Subject: mail delivery failed: returning", "x\nSubject: no\nsubject: failure",
             "From: MAILER-DAEMON@x (Mail Delivery System)", "a b c", ""]
    for p in (r"^Subject:.*(?:fail|deliver)", r"From:.*\b(?:mailer-daemon|root)@",
              r".*b.*c", r"^.*$"):
        for flags in (re.I, re.I | re.M):
            greedy, lazy = re.compile(p, flags), re.compile(_lazy_dot_star(p), flags)
            for text in texts:
                g, z = greedy.search(text), lazy.search(text)
                assert (g is None) == (z is None) and (g is None or g.start() == z.start())
