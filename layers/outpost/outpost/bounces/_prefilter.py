"""Cheap literal pre-checks for the big case-insensitive alternations of the family table.

Python's ``re`` tries every alternative of an ``re.I`` pattern at every position of the
text, which makes the family ``detect`` patterns the hottest code of the parser.  Each
alternative of such a pattern contains a literal run that any match must contain (e.g.
"qmail-send program"); if none of those runs occurs in the lower-cased text, the pattern
cannot match and is not run.  The runs are derived from the pattern itself at import time
(so the table stays the single source of truth), conservatively: only characters at group
depth 0 that no quantifier makes optional, ASCII only; a pattern for which some alternative
has no run of at least ``MIN`` characters gets no pre-check at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

MIN = 4
_LITERAL = re.compile(r"[A-Za-z0-9 ,'!@#%&=_<>/-]")


def _class_end(pattern: str, i: int) -> int:
    """The index just past the character class that opens at pattern[i] ("["), with a
    leading "^" and a first "]" taken as members, and escapes skipped."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _atoms(pattern: str, *, verbose: bool = False) -> Iterator[tuple[int, str]]:
    """Each atom of a pattern, with the index it starts at: an escape ("\\x"), a character
    class ("[...]", as _class_end reads it), under ``verbose`` a comment ("#" up to the line
    break), or one character.  Every walker below reads a pattern through it, so they agree
    on where an escape or a class ends."""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            j = i + 2
        elif c == "[":
            j = _class_end(pattern, i)
        elif c == "#" and verbose:
            nl = pattern.find("\n", i)
            j = n if nl < 0 else nl
        else:
            j = i + 1
        yield i, pattern[i:j]
        i = j


def _split_top(pattern: str) -> list[str] | None:
    """The top-level alternatives of a pattern (None if it has inline flags we don't model)."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for i, a in _atoms(pattern):
        if a == "(":
            if pattern.startswith("(?", i) and not pattern.startswith(("(?:", "(?P<", "(?=",
                                                                      "(?!", "(?<", "(?>"), i):
                return None  # inline flags: leave the pattern alone
            depth += 1
        elif a == ")":
            depth -= 1
            if depth < 0:
                return None  # not one alternation: a group closes that opened before
        elif a == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(a)
    out.append("".join(cur))
    return out


def _longest_run(alt: str) -> str:
    """The longest literal run of one alternative that every match must contain."""
    best = ""
    run: list[str] = []
    tokens: list[tuple[str, bool]] = []  # (text, is_literal_char)
    depth = 0
    for _, a in _atoms(alt):
        c = a[0]
        if c == "\\":
            nxt = a[1:]
            # An escaped punctuation character is that character; \s, \d, \b... are not.
            tokens.append((nxt, depth == 0 and bool(nxt) and not nxt.isalnum()))
        elif c == "[":
            tokens.append(("", False))
        elif c == "(":
            depth += 1
            tokens.append(("", False))
        elif c == ")":
            depth -= 1
            tokens.append(("", False))
        elif c in "?*{":
            # The previous item is optional (or the group is): drop it from the run.
            if tokens:
                tokens[-1] = ("", False)
            tokens.append(("", False))
        elif c == "+":
            tokens.append(("", False))  # "x+" still contains one x, but keep it simple
        else:
            tokens.append((c, depth == 0 and bool(_LITERAL.fullmatch(c))))
    for text, lit in tokens:
        if lit and text.isascii():
            run.append(text)
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    if len(run) > len(best):
        best = "".join(run)
    return best.strip()


def needles(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Lower-case literals one of which occurs in any text the pattern matches, or None."""
    alts = _split_top(pattern.pattern)
    if not alts:
        return None
    out: list[str] = []
    for alt in alts:
        run = _longest_run(alt)
        if len(run) < MIN:
            return None
        out.append(run.lower())
    return tuple(dict.fromkeys(out))


def _unverbose(pattern: str) -> str:
    """A verbose (re.X) pattern written as a plain one: whitespace and comments outside
    classes dropped, the class "[ ]" written as a space, one wrapping group unwrapped."""
    out: list[str] = []
    for _, a in _atoms(pattern, verbose=True):
        if a == "[ ]":
            out.append(" ")
        elif not (a[0] == "#" or a.isspace()):
            out.append(a)
    plain = "".join(out)
    if plain.startswith(("(?>", "(?:")) and plain.endswith(")"):
        depth = 0
        for k, a in _atoms(plain):
            depth += a == "("
            depth -= a == ")"
            if depth == 0:
                if k == len(plain) - 1:
                    plain = plain[3:-1]
                break
    return plain


class PhraseRegex:
    """A verbose alternation of phrases (classify's REGEX tables), matched against
    lower-cased text, split up: the alternatives that each contain a literal run of at
    least ``MIN`` characters are grouped by that run, and a group runs only when its run
    occurs in the text; the few others always run.  ``search`` is true exactly when the
    whole pattern would match: the pattern is one alternation with nothing after it, so a
    match of the whole is a match of one alternative."""

    __slots__ = ("groups", "needles", "rest")

    def __init__(self, verbose: str) -> None:
        plain = _unverbose(verbose)
        alts = _split_top(plain)
        # (run, the alternatives that contain it): a common run ("http", "mail") gates
        # only its own alternatives, not the whole alternation.
        self.groups: tuple[tuple[str, re.Pattern[str]], ...] = ()
        self.needles: tuple[str, ...] = ()
        self.rest: re.Pattern[str] | None = None
        if alts is None:
            self.rest = re.compile(verbose, re.X)
            return
        by_run: dict[str, list[str]] = {}
        rest: list[str] = []
        for alt in alts:
            run = _longest_run(alt)
            if len(run) >= MIN:
                by_run.setdefault(run.lower(), []).append(alt)
            else:
                rest.append(alt)
        self.groups = tuple((run, re.compile("|".join(group))) for run, group in by_run.items())
        self.needles = tuple(by_run)
        self.rest = re.compile("|".join(rest)) if rest else None

    def search(self, low: str) -> bool:
        if self.rest is not None and self.rest.search(low):
            return True
        for run, rx in self.groups:
            if run in low and rx.search(low):
                return True
        return False


class Prefiltered:
    """``pattern.search`` behind a literal pre-check on the lower-cased text.  ``found``
    answers only whether it matches, and runs just the alternatives whose own literal occurs
    (a match of a top-level alternation is a match of one of its alternatives); a
    line-anchored one is tried at the start and after each line break (_LineStart)."""

    __slots__ = ("pattern", "needles", "alternatives")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.needles = needles(pattern) if pattern.flags & re.I else None
        self.alternatives: tuple[_Alternative, ...] | None = None
        alts = _split_top(pattern.pattern)
        if alts and not _BACKREF.search(pattern.pattern):
            # found() asks only whether an alternative matches: its ".*" may be lazy.
            self.alternatives = _gated([_lazy_dot_star(a) for a in alts], pattern.flags, "")

    def search(self, text: str, low: str | None = None) -> re.Match[str] | None:
        if self.needles is not None:
            low = text.lower() if low is None else low
            for n in self.needles:
                if n in low:
                    break
            else:
                return None
        return self.pattern.search(text)

    def found(self, text: str, low: str | None = None) -> bool:
        if self.alternatives is None:
            return self.search(text, low) is not None
        low = text.lower() if low is None else low
        for runs, rx, starts in self.alternatives:
            if runs:
                for r in runs:
                    if r in low:
                        break
                else:
                    continue
            if (rx.search(text) if starts is None else starts.start(text, low)) is not None:
                return True
        return False


class _LineStart:
    """Where "^X" (re.M) first matches, found as X matching at the start of the text or
    "\\nX" after it: "\\n" is a literal prefix that the regex engine skips to, where "^"
    is tried at every position of the text.  The same leftmost start: "^" under re.M holds
    at 0 and just after each "\\n", nowhere else."""

    __slots__ = ("first", "after")

    def __init__(self, first: re.Pattern[str], after: re.Pattern[str]) -> None:
        self.first = first
        self.after = after

    @classmethod
    def of(cls, pattern: str, flags: int) -> _LineStart | None:
        """For one alternative (no top-level "|") that starts with "^", under re.M."""
        if not (pattern.startswith("^") and flags & re.M) or flags & re.X:
            return None
        return cls(re.compile(pattern, flags), re.compile("\n" + pattern[1:], flags))

    def start(self, text: str, _low: str | None = None) -> int | None:
        if self.first.match(text) is not None:
            return 0
        m = self.after.search(text)
        return None if m is None else m.start() + 1


class _LiteralStart:
    """Where X first matches, for an X that starts with a literal (at least MIN characters
    of it): tried only where that literal occurs (str.find), not at every position.  Under
    re.I the literal is found in the lower-cased text, which is the text's own positions and
    its case-insensitive matches only for ASCII text: any other is searched whole.  After
    _CANDIDATES tries the rest of the text is searched whole (a text full of the literal
    costs what the plain search costs)."""

    __slots__ = ("rx", "literal", "icase")

    def __init__(self, rx: re.Pattern[str], literal: str, icase: bool) -> None:
        self.rx = rx
        self.literal = literal
        self.icase = icase

    @classmethod
    def of(cls, pattern: str, flags: int) -> _LiteralStart | None:
        if flags & re.X:
            return None
        literal = _literal_prefix(pattern)
        if len(literal) < MIN or not literal.isascii():
            return None
        icase = bool(flags & re.I)
        return cls(re.compile(pattern, flags), literal.lower() if icase else literal, icase)

    def start(self, text: str, low: str | None = None) -> int | None:
        if self.icase:
            if not text.isascii():
                m = self.rx.search(text)
                return None if m is None else m.start()
            hay = text.lower() if low is None else low
        else:
            hay = text
        i = hay.find(self.literal)
        for _ in range(_CANDIDATES):
            if i < 0:
                return None
            if self.rx.match(text, i) is not None:
                return i
            i = hay.find(self.literal, i + 1)
        m = self.rx.search(text, i) if i >= 0 else None
        return None if m is None else m.start()


_CANDIDATES = 32


def _literal_prefix(alt: str) -> str:
    """The characters every match of ``alt`` starts with: its leading literal characters
    (an escaped punctuation character is that character), up to the first one that a
    quantifier makes optional (kept if the quantifier is "+": it occurs at least once)."""
    out: list[str] = []
    i = 0
    while i < len(alt):
        c = alt[i]
        if c == "\\":
            ch = alt[i + 1:i + 2]
            if not ch or ch.isalnum() or ch == "_":
                break  # \s, \d, \b, \1 ...: not one literal character
            step = 2
        elif c in ".^$*+?{}[]()|#":
            break
        else:
            ch, step = c, 1
        after = alt[i + step:i + step + 1]
        if after in ("?", "*", "{"):
            break
        out.append(ch)
        if after == "+":
            break
        i += step
    return "".join(out)


def _starts(pattern: str, flags: int) -> _LineStart | _LiteralStart | None:
    """How to find where one alternative (no top-level "|") first matches faster than
    searching it: by the line starts, or by its leading literal; None: search it."""
    return _LineStart.of(pattern, flags) or _LiteralStart.of(pattern, flags)


# One alternative: the lower-case literals one of which any of its matches contains (none:
# always run), the alternative compiled alone, and how to find its first match (_starts).
_Alternative = tuple[tuple[str, ...], re.Pattern[str], _LineStart | _LiteralStart | None]


def _gated(alts: list[str], flags: int, prefix: str) -> tuple[_Alternative, ...]:
    """Each alternative compiled alone (after ``prefix``), with the lower-case literals one
    of which any of its matches contains (none: always run)."""
    return tuple((_alternative_needles(alt), re.compile(prefix + alt, flags),
                  _starts(prefix + alt, flags)) for alt in alts)


def _lazy_dot_star(alt: str) -> str:
    """``alt`` with each ".*" made lazy (".*?"): where a match starts, and whether there is
    one, do not change (only which of the matches at that start is taken), and a lazy ".*"
    before a group of phrases ("^Subject:.*(?:undeliver|...)") tries them from the left
    instead of from the end of the line.  Left alone when an atomic group, a possessive
    quantifier or a group reference could make the choice matter."""
    if "(?>" in alt or _BACKREF.search(alt) or re.search(r"[*+?}][+]", alt):
        return alt
    out: list[str] = []
    star = -1  # where the "*" of a ".*" made lazy is
    for i, a in _atoms(alt):
        if i == star:
            continue
        if a == "." and alt.startswith(".*", i) and alt[i + 2:i + 3] not in ("?", "+"):
            out.append(".*?")
            star = i + 1
        else:
            out.append(a)
    return "".join(out)


def _alternative_needles(alt: str) -> tuple[str, ...]:
    """Its own literal run; else, for "PREFIX(?:X|Y|...)", one run of each of X, Y, ...;
    else none."""
    run = _safe_run(alt)
    if len(run) >= MIN:
        return (run,)
    if not alt.endswith(")"):
        return ()
    i = alt.find("(?:")
    while i >= 0:
        inner = alt[i + 3:-1]
        parts = _split_top(inner) if alt[i - 1:i] != "\\" else None
        if parts is not None and _compiles(inner):
            runs = [_safe_run(p) for p in parts]
            return tuple(dict.fromkeys(runs)) if all(len(r) >= MIN for r in runs) else ()
        i = alt.find("(?:", i + 1)
    return ()


# Counted quantifiers and numeric escapes: _longest_run would take their digits for literals.
_NOT_LITERAL = re.compile(r"\{|\\[uUxN0-9]")


def _safe_run(alt: str) -> str:
    return "" if _NOT_LITERAL.search(alt) else _longest_run(alt).lower()


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


# Group references would be renumbered by compiling one alternative alone.
_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


class AnchoredAlternation:
    """Where the leftmost match of a line-anchored alternation "^(?:A|B|...)" (re.I | re.M)
    starts: the least start of "^A", "^B", ... (at the first line start where the whole
    matches, one of its alternatives does).  The alternatives that start with a required
    literal character fail at once on most lines: they run together, as one alternation
    after "\\n" (``quick``); each other one runs alone, and only where its literal run occurs
    in the lower-cased text."""

    __slots__ = ("pattern", "parts", "quick")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.parts: tuple[_Alternative, ...] | None = None
        self.quick: _LineStart | None = None
        p = pattern.pattern
        alts = _split_top(p[4:-1]) if p.startswith("^(?:") and p.endswith(")") else None
        if alts and pattern.flags & re.I and pattern.flags & re.M and not _BACKREF.search(p):
            quick = [a for a in alts if _starts_with_a_literal(a)]
            self.parts = _gated([a for a in alts if a not in quick], pattern.flags, "^")
            if quick:
                self.quick = _LineStart.of("^(?:" + "|".join(quick) + ")", pattern.flags)

    def start(self, text: str) -> int | None:
        if self.parts is None:
            m = self.pattern.search(text)
            return m.start() if m else None
        best = self.quick.start(text) if self.quick is not None else None
        if best == 0:
            return 0
        low = text.lower()
        for runs, _rx, lines in self.parts:
            if runs:
                for r in runs:
                    if r in low:
                        break
                else:
                    continue
            assert lines is not None  # every part starts with "^", under re.M
            at = lines.start(text, low)
            if at is not None and (best is None or at < best):
                if at == 0:
                    return 0
                best = at
        return best


def _starts_with_a_literal(alt: str) -> bool:
    """Does every match of ``alt`` start with one given character (not a class, group or
    escape, and no quantifier that makes it optional)?"""
    if alt[:1] in ("", "[", ".", "(", "\\", "^", "$", "|") or alt[1:2] in ("?", "*"):
        return False
    return alt[1:2] != "{" or _AT_LEAST_ONCE.match(alt, 1) is not None


_AT_LEAST_ONCE = re.compile(r"\{[1-9]\d*(?:,\d*)?\}")  # {2,}, {1,3}: not {0,3}
