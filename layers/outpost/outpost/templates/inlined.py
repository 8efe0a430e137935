"""CSS inlined once per template shape in a batch, then per message by substituting values.

css-inline and the Python passes around it (the bound on what it adds, the rewrite of `"` in
CSS) took about 5 of the ~9 ms a realistic message costs (bench/templates_batch.py). In a batch
the same template is rendered for every message and most of its HTML does not change: only the
values of `{{name}}` tags do. So the html is rendered a second time with each value replaced by a
marker (U+E000 n U+E001: the *skeleton*), inlined once per distinct skeleton (the shape: which
sections ran, how often), and each message's inlined html is the inlined skeleton with each
marker replaced by its value, written as css-inline writes text or an attribute value.

That is exact, not approximate, only when a value cannot change how the HTML parses or which
CSS rules match. What makes it so, each checked (anything else takes the per-message path,
`inline_css_checked`, whose result this must equal byte for byte):
- a value is HTML-escaped (`{{name}}`: & < > " ' become references), so it cannot open or close
  a tag, a quote, a comment or a reference: a raw tag (`{{{name}}}`, other than a layout's
  `@content`, itself marked) makes the message take the per-message path;
- its tokenizing and tree building then depend only on NUL and CR (the input stream's
  normalisation), on being whitespace or not (table text, the head, `<pre>`'s first newline)
  and on being empty (`:empty`), and a byte order mark (U+FEFF) first in the document is dropped:
  a value with NUL or CR, empty, or starting with whitespace or U+FEFF takes the per-message path
  (a marker is none of these);
- the text before a marker cannot join it into a reference or a tag (`&no` + `t;`, `<` + `b>`);
- a marker is never in a tag or attribute name, an unquoted attribute value (a space would end
  it), a `class`, `id`, `style`, `lang`, `dir`, `type` or `data-css-inline` attribute (`ignore`
  keeps css-inline off the element), any attribute of a <link> or <style> (css-inline drops a
  <link rel="stylesheet"> and keeps any other), any attribute when the CSS
  has attribute selectors (`[`), a <style> element's text, a comment or a raw-text element:
  the skeleton is read with the same expressions css.py reads it with (so the bound on the
  bytes inlining adds is the same for every message of the shape), and css-inline's output is
  read for where each marker landed (each exactly once);
- a probe (a value holding a space, a no-break space and & < > " ') is substituted and inlined
  once per shape, and must give exactly what substitution gives.
A shape is built the second time it is seen (a single send pays nothing), at most MAX_SHAPES per
batch (shared by its templates: a skeleton alone decides its shape), for skeletons of at most MAX_SKELETON characters.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .css import _ATTR, _START_TAG, _STYLE_TEXT, inline_css, inlined_bytes_bound

MAX_SHAPES = 8  # shapes kept per template and batch (a loop of varying length: one per length)
MAX_MISSES = 64  # messages without a shape (beyond 8 per message with one) before a batch stops marking
MAX_SKELETON = 300_000  # characters: a larger html takes the per-message path (memory: ~8 x 2.3 MB at most)
OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters around a marker's number
_MARKER = re.compile("\ue000([0-9]+)\ue001")
_HTML_SPACE = "\t\n\f\r "
_OPENS = re.compile(r"<[!/?]?-?\Z")  # a tag, end tag, comment or declaration a value could go on
# css-inline's (html5ever's) output: a start tag's name and attributes (values always double-quoted),
# with nothing required after them, so a match never backtracks (a name holding a quote ends it
# early: the probe then disagrees), and one attribute in it.
_OUT_TAG = re.compile(r"""<[A-Za-z][^\s/>]*(?:\s+[^\s"'>/=]+(?:="[^"]*")?)*""")
_OUT_ATTR = re.compile(r'\s([^\s"\'>/=]+)="([^"]*)"')
_RAW = re.compile(r"<(script|style|xmp|iframe|noembed|noframes|plaintext|noscript|textarea|title)\b[^>]*>"
                  r"[\s\S]*?(?:</\1\s*>|\Z)|<!--[\s\S]*?(?:-->|\Z)", re.IGNORECASE)
# data-css-inline="ignore" keeps css-inline off an element (or a <style>): its value decides the output.
_NOT_IN = frozenset({"class", "id", "style", "lang", "dir", "type", "xml:lang", "data-css-inline"})
_READ_BY_INLINER = frozenset({"link", "style"})  # rel="stylesheet" drops a <link>: no marker in their attributes
_PROBE = "\ue002{}\ue003 &<>\"'\u00a0x"


def marker(n: int) -> str:
    return f"{OPEN}{n}{CLOSE}"


def escaped(s: str) -> str:
    """As mustache.py writes a `{{name}}` value into html."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace(
        "'", "&#x27;")


def unmarked(skeleton: str, values: Sequence[str]) -> str:
    """The html a skeleton stands for: each marker replaced by its value, escaped."""
    return _MARKER.sub(lambda m: escaped(values[int(m.group(1))]), skeleton)


def _as_text(s: str) -> str:
    """A text node's value as css-inline writes it (html5ever's serializer)."""
    return s.replace("&", "&amp;").replace("\u00a0", "&nbsp;").replace("<", "&lt;").replace(">", "&gt;")


def _as_attribute(s: str) -> str:
    return s.replace("&", "&amp;").replace("\u00a0", "&nbsp;").replace('"', "&quot;")


def plain(value: str) -> bool:
    """A value whose parsing is the marker's: not empty, no NUL or CR, no leading whitespace or
    U+FEFF (the parser drops a byte order mark that starts the document)."""
    return value != "" and value[0] not in _HTML_SPACE + "\ufeff" and "\x00" not in value and "\r" not in value


@dataclass(frozen=True)
class Shape:
    """One skeleton inlined: the pieces between markers, and how each marker's value is written."""

    pieces: tuple[str, ...]  # len(order) + 1 pieces of css-inline's output, between the markers
    order: tuple[int, ...]  # the marker at each gap (css-inline may move text, e.g. out of a table)
    writers: tuple[Callable[[str], str], ...]  # per gap: _as_text or _as_attribute
    bound: int  # inlined_bytes_bound of the skeleton (the same for every message of the shape)

    def fill(self, values: Sequence[str]) -> str:
        out = [self.pieces[0]]
        for i, n in enumerate(self.order):
            out.append(self.writers[i](values[n]))
            out.append(self.pieces[i + 1])
        return "".join(out)


def _skeleton_ok(skeleton: str) -> bool:
    """The skeleton read as css.py reads it: no marker where a value could change a start tag's
    name, attributes, class or id, or the CSS."""
    if any(OPEN in m.group(2) for m in _STYLE_TEXT.finditer(skeleton)):
        return False
    attribute_selectors = "[" in "".join(m.group(2) for m in _STYLE_TEXT.finditer(skeleton))
    for m in _START_TAG.finditer(skeleton):
        if OPEN not in m.group():
            continue
        if OPEN in m.group(1) or attribute_selectors or m.group(1).lower() in _READ_BY_INLINER:
            return False
        for a in _ATTR.finditer(m.group(2)):
            value = a.group(3) or ""
            if OPEN in a.group(1) or (OPEN in value and (value[:1] not in "\"'" or a.group(1).lower() in _NOT_IN)):
                return False
    since = 0
    for m in _MARKER.finditer(skeleton):
        if _joins(skeleton, m.start(), since):
            return False
        since = m.end()
    return True


def _attribute_values(out: str) -> list[tuple[int, int, str]]:
    """(start, end, attribute name) of each attribute value holding a marker in css-inline's
    output, in order: it writes every value double-quoted with its `"` as &quot; (one pass)."""
    spans = []
    for tag in _OUT_TAG.finditer(out):
        if OPEN in tag.group():
            spans += [(tag.start() + a.start(2), tag.start() + a.end(2), a.group(1).lower())
                      for a in _OUT_ATTR.finditer(tag.group()) if OPEN in a.group(2)]
    return spans


def _place(out: str, count: int) -> tuple[list[str], list[int], list[Callable[[str], str]]] | None:
    """css-inline's output of a skeleton cut at its markers, with each marker's writer; None
    when a marker is missing, repeated, in a comment or raw text, or in an attribute it must not
    be in. A marker found in no attribute value is written as text: the probe tells otherwise."""
    if any(OPEN in m.group() for m in _RAW.finditer(out)):
        return None
    spans, k = _attribute_values(out), 0
    pieces: list[str] = []
    order: list[int] = []
    writers: list[Callable[[str], str]] = []
    at = 0
    for m in _MARKER.finditer(out):
        while k < len(spans) and spans[k][1] <= m.start():
            k += 1
        in_value = k < len(spans) and spans[k][0] <= m.start()
        if in_value and spans[k][2] in _NOT_IN:
            return None
        pieces.append(out[at:m.start()])
        order.append(int(m.group(1)))
        writers.append(_as_attribute if in_value else _as_text)
        at = m.end()
    pieces.append(out[at:])
    return (pieces, order, writers) if sorted(order) == list(range(count)) else None


def _joins(skeleton: str, at: int, since: int) -> bool:
    """Whether the text before a marker at `at` (back to `since`) could join a value's first
    characters into a character reference (`&no` + `t;`) or a tag (`<` + `b>`, `</`, `<!-`)."""
    i = at
    while i > since and (skeleton[i - 1].isascii() and (skeleton[i - 1].isalnum() or skeleton[i - 1] == "#")):
        i -= 1
    if i > 0 and skeleton[i - 1] == "&":
        return True
    return _OPENS.search(skeleton, max(0, at - 3), at) is not None


def build_shape(skeleton: str, count: int, limit: int | None = None) -> Shape | None:
    """The shape of `skeleton` (its `count` markers numbered 0..count-1), or None when
    substitution would not be exact (module docstring), or when what inlining can add is over
    `limit` (the message's budget left: css-inline never runs on what the per-message path
    refuses before running it)."""
    if not _skeleton_ok(skeleton):
        return None
    bound = inlined_bytes_bound(skeleton)
    if limit is not None and bound > limit:
        return None
    placed = _place(inline_css(skeleton), count)
    if placed is None:
        return None
    shape = Shape(tuple(placed[0]), tuple(placed[1]), tuple(placed[2]), bound)
    probes = [_PROBE.format(n) for n in range(count)]
    return shape if inline_css(unmarked(skeleton, probes)) == shape.fill(probes) else None


class Shapes:
    """The shapes of a batch's html (thread-safe; one set for all its templates): a skeleton seen
    once is remembered, built the second time, and then reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[int] = set()  # hashes: a collision only builds a shape early (still exact)
        self._built: dict[str, Shape | None] = {}
        self.used = self.missed = 0

    def worth_marking(self) -> bool:
        """False once far more messages found no shape than used one (skeletons that all differ, as
        a batch built to defeat the shapes): marking would only render each message's html twice."""
        return self.missed < MAX_MISSES + 8 * self.used

    def tally(self, shape: Shape | None) -> None:
        """Count a message that used a shape, or marked its html for none."""
        with self._lock:
            self.used, self.missed = self.used + (shape is not None), self.missed + (shape is None)

    def get(self, skeleton: str, count: int, limit: int) -> Shape | None:
        if len(skeleton) > MAX_SKELETON:
            return None
        with self._lock:
            if skeleton in self._built:
                return self._built[skeleton]
            if hash(skeleton) not in self._seen or len(self._built) >= MAX_SHAPES:
                if len(self._seen) < 1000:
                    self._seen.add(hash(skeleton))
                return None
        try:  # outside the lock: others may build it too, the same
            shape = build_shape(skeleton, count, limit)
        except Exception:  # noqa: BLE001 - css-inline refusing the skeleton: the per-message path decides
            shape = None
        with self._lock:
            self._built[skeleton] = shape
        return shape
