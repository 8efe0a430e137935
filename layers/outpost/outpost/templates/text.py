"""HTML to plain text, for a template that has no text part (the text/plain alternative).

A small converter with its own linear tokenizer (html2text is GPL; the standard library's
html.parser is quadratic on unclosed constructs in Python 3.11/3.12: 200 KB of "<a" took 74 s).
Each character is looked at a bounded number of times: a tag is `<name ...>` with no `<` or
`>` inside (anything else starting with `<` is text), a comment runs to its `-->` (or the end),
<script> and <style> to their end tag. One regular expression cuts the whole document into
tokens (findall); tags that change nothing are skipped, and a block's start or end is a
paragraph break either way: about 1.7 ms for a realistic 65 KB message, where the scan token by
token took 3.2 (bench/templates_batch.py --profile; the old scan is kept as
tests/unit/text_reference.py, and a property test holds the two equal).

Rules:
- block elements (p, div, h1-h6, tr, table, ul, ol, blockquote, hr, ...) end a paragraph:
  one blank line between paragraphs; <br> is a line break; <li> starts a line with "- ";
  table cells on one row are joined with " | ";
- whitespace in running text collapses to one space (HTML's rule); <pre> keeps its lines;
- links read `text (url)`, or just `url` when the text is the url (or empty); mailto:,
  javascript: and #anchors read as their text; images show their alt text;
- <head>, <style>, <script>, <template>, <title>, <noscript> and comments are dropped;
  character references are decoded.
"""

from __future__ import annotations

import html as _html
import re
from bisect import bisect_left

_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
_DROPPED = frozenset({"head", "template", "title", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_HREF = re.compile(r"""\bhref\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)


def _attr(pattern: re.Pattern[str], attrs: str) -> str | None:
    m = pattern.search(attrs)
    return _html.unescape(m.group(1).strip("\"'")) if m else None


# One token per match, in the order the converter tries them at a "<": a comment (to its "-->"
# or the end), a <script> or <style> element with its raw text (to the first "</script" or
# "</style", any case, then its ">" or the end), a tag, a doctype or other "<!"/"<?" construct, a
# "<" that is none of these (text), or the text up to the next "<". No repetition is nested and
# each lazy scan stops at a fixed string: one left-to-right pass (finditer), linear.
_TOKENS = re.compile(
    r"<!--[\s\S]*?(?:-->|\Z)"
    r"|<(?ai:script)(?=[\s/>])[^<>]*>[\s\S]*?(?:</(?ai:script)[^>]*(?:>|\Z)|\Z)"
    r"|<(?ai:style)(?=[\s/>])[^<>]*>[\s\S]*?(?:</(?ai:style)[^>]*(?:>|\Z)|\Z)"
    r"|<(/?)([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])([^<>]*)>"
    r"|<[!?][^<>]*>"
    r"|([^<]+|<)")
_PARAGRAPH = _BLOCKS - {"pre"}  # start or end: a paragraph break, nothing else
_STARTS = frozenset({"pre", "a", "td", "th", "br", "li", "img"})  # the other start tags that do something
_ENDS = frozenset({"pre", "a", "li"})  # and end tags


class _Writer:
    def __init__(self) -> None:
        self.out: list[str] = []  # finished lines; "" marks a paragraph break
        self.line: list[str] = []
        self.size = [0]  # size[i]: the characters in line[:i]
        self.ink: list[int] = []  # the pieces of line holding more than whitespace, in order
        self.links: list[tuple[str, int]] = []  # (href, where its text starts in self.line)
        self.dropped = 0
        self.pre = 0

    def flush(self) -> None:
        if self.line:
            text = "".join(self.line)
            text = text.rstrip() if self.pre else text.strip()
            self.line, self.size, self.ink = [], [0], []
            if text:
                self.out.append(text)
        self.links = []

    def paragraph(self) -> None:
        if self.line:
            self.flush()
        else:
            self.links = []
        if self.out and self.out[-1] != "":
            self.out.append("")

    def write(self, text: str) -> None:
        if text[:1] == " " and (not self.line or self.line[-1][-1:] == " "):
            text = text.lstrip(" ")
        if text:
            self.put(text)

    def put(self, piece: str) -> None:
        self.line.append(piece)
        self.size.append(self.size[-1] + len(piece))
        if piece.strip():
            self.ink.append(len(self.line) - 1)

    def link_text_is(self, at: int, href: str) -> bool:
        """Whether "".join(line[at:]).strip() is "" or `href`, without joining more than len(href)
        characters: an <a> closing joined all the text of the links inside it, which links nested
        n deep made quadratic (1 MB of nested <a>: 11 s; now linear)."""
        k = bisect_left(self.ink, at)
        if k == len(self.ink):
            return True
        first, last = self.ink[k], self.ink[-1]
        lead = len(self.line[first]) - len(self.line[first].lstrip())
        trail = len(self.line[last]) - len(self.line[last].rstrip())
        if self.size[last + 1] - self.size[first] - lead - trail != len(href):
            return False
        return "".join(self.line[first:last + 1]).strip() == href

    def data(self, raw: str) -> None:
        text = _html.unescape(raw) if "&" in raw else raw
        if not self.pre:
            self.write(_SPACES.sub(" ", text))
            return
        for i, ln in enumerate(text.split("\n")):
            if i:
                self.flush()
            if ln:
                self.put(ln)

    def start(self, tag: str, attrs: str) -> None:
        if tag in _BLOCKS:
            self.paragraph()
            self.pre += tag == "pre"
        elif tag == "a":
            self.links.append((_attr(_HREF, attrs) or "", len(self.line)))
        elif tag in ("td", "th"):
            if self.line:
                self.write(" | ")
        elif tag == "br":
            self.flush()
        elif tag == "li":
            self.flush()
            self.write("- ")
        elif tag == "img" and (alt := _SPACES.sub(" ", _attr(_ALT, attrs) or "").strip()):
            self.write(f" {alt} ")

    def end(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.paragraph()
            self.pre = max(0, self.pre - (tag == "pre"))
        elif tag == "a" and self.links:
            href, at = self.links.pop()
            if href and not href.startswith(("#", "mailto:", "javascript:")):
                if self.link_text_is(at, href):
                    del self.line[at:], self.size[at + 1:], self.ink[bisect_left(self.ink, at):]
                    self.put(href)
                else:
                    self.put(f" ({href})")
        elif tag == "li":
            self.flush()

    def text(self) -> str:
        self.flush()
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + ("\n" if self.out else "")


def html_to_text(html: str) -> str:
    """The text alternative of an HTML body (see the module docstring for the rules)."""
    w = _Writer()
    dropped = 0  # inside <head>, <template>, <title> or <noscript>: nothing is written
    # findall: one tuple per token, ("", "", "", "") for a comment, raw text or a declaration.
    for closing, tag, attrs, data in _TOKENS.findall(html):
        if data:
            if not dropped:
                w.data(data)
        elif tag:
            tag = tag.lower()
            if tag in _PARAGRAPH:
                if not dropped:
                    w.paragraph()
            elif tag in _DROPPED:
                if closing:
                    dropped = max(0, dropped - 1)
                elif not attrs.rstrip().endswith("/"):
                    dropped += 1
            elif dropped:
                continue
            elif closing:
                if tag in _ENDS:
                    w.end(tag)
            elif tag in _STARTS:
                w.start(tag, attrs)
    return w.text()
