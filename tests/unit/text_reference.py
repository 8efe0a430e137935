"""The HTML-to-text converter as it was before the single-pass tokenizer (outpost/templates/text.py
at c7f2f69), kept unchanged as the reference tests/unit/test_templates_text.py compares with.

HTML to plain text, for a template that has no text part (the text/plain alternative).

A small converter with its own linear tokenizer (html2text is GPL; the standard library's
html.parser is quadratic on unclosed constructs in Python 3.11/3.12: 200 KB of "<a" took 74 s).
Each character is looked at a bounded number of times: a tag is `<name ...>` with no `<` or
`>` inside (anything else starting with `<` is text), a comment runs to its `-->` (or the end).

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

_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
_DROPPED = frozenset({"head", "template", "title", "noscript"})
_RAW_TEXT = frozenset({"script", "style"})  # their content is not markup: skipped to the end tag
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])([^<>]*)>")  # the lookahead: no backtracking
_OTHER = re.compile(r"<[!?][^<>]*>")  # a doctype, a CDATA start, a processing instruction
_HREF = re.compile(r"""\bhref\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)


def _attr(pattern: re.Pattern[str], attrs: str) -> str | None:
    m = pattern.search(attrs)
    return _html.unescape(m.group(1).strip("\"'")) if m else None


class _Writer:
    def __init__(self) -> None:
        self.out: list[str] = []  # finished lines; "" marks a paragraph break
        self.line: list[str] = []
        self.links: list[tuple[str, int]] = []  # (href, where its text starts in self.line)
        self.dropped = 0
        self.pre = 0

    def flush(self) -> None:
        text = "".join(self.line)
        text = text.rstrip() if self.pre else text.strip()
        self.line, self.links = [], []
        if text:
            self.out.append(text)

    def paragraph(self) -> None:
        self.flush()
        if self.out and self.out[-1] != "":
            self.out.append("")

    def write(self, text: str) -> None:
        if (not self.line or self.line[-1].endswith(" ")) and text.startswith(" "):
            text = text.lstrip(" ")
        if text:
            self.line.append(text)

    def data(self, raw: str) -> None:
        if self.dropped:
            return
        text = _html.unescape(raw)
        if not self.pre:
            self.write(_SPACES.sub(" ", text))
            return
        for i, ln in enumerate(text.split("\n")):
            if i:
                self.flush()
            if ln:
                self.line.append(ln)

    def start(self, tag: str, attrs: str) -> None:
        if tag in _DROPPED:
            self.dropped += 1
        if self.dropped:
            return
        if tag == "br":
            self.flush()
        elif tag == "li":
            self.flush()
            self.write("- ")
        elif tag in ("td", "th") and self.line:
            self.write(" | ")
        elif tag == "a":
            self.links.append((_attr(_HREF, attrs) or "", len(self.line)))
        elif tag == "img" and (alt := _SPACES.sub(" ", _attr(_ALT, attrs) or "").strip()):
            self.write(f" {alt} ")
        elif tag in _BLOCKS:
            self.paragraph()
            self.pre += tag == "pre"

    def end(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropped = max(0, self.dropped - 1)
            return
        if self.dropped:
            return
        if tag == "a" and self.links:
            href, at = self.links.pop()
            text = "".join(self.line[at:]).strip()
            if href and not href.startswith(("#", "mailto:", "javascript:")):
                if not text or text == href:
                    self.line[at:] = [href]
                else:
                    self.line.append(f" ({href})")
        elif tag == "li":
            self.flush()
        elif tag in _BLOCKS:
            self.paragraph()
            self.pre = max(0, self.pre - (tag == "pre"))

    def text(self) -> str:
        self.flush()
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + ("\n" if self.out else "")


def html_to_text(html: str) -> str:
    """The text alternative of an HTML body (see the module docstring for the rules)."""
    w = _Writer()
    lowered = html.lower()  # for the end tags of raw-text elements, found case-insensitively
    i, n = 0, len(html)
    while i < n:
        lt = html.find("<", i)
        if lt == -1:
            w.data(html[i:])
            break
        if lt > i:
            w.data(html[i:lt])
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4)
            i = n if end == -1 else end + 3
            continue
        m = _TAG.match(html, lt)
        if m is None:
            other = _OTHER.match(html, lt)
            if other is None:
                w.data("<")
                i = lt + 1
            else:
                i = other.end()
            continue
        closing, tag, attrs = m.group(1), m.group(2).lower(), m.group(3)
        i = m.end()
        if closing:
            w.end(tag)
        elif tag in _RAW_TEXT:
            end = lowered.find(f"</{tag}", i)
            i = n if end == -1 else (html.find(">", end) + 1 or n)
        else:
            w.start(tag, attrs)
            if attrs.rstrip().endswith("/") and tag in _DROPPED:
                w.end(tag)
    return w.text()
