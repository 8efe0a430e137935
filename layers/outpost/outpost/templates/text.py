"""HTML to plain text, for a template that has no text part (the text/plain alternative).

A small converter on the standard library's html.parser (one linear pass; html2text is GPL):
- block elements (p, div, h1-h6, tr, table, ul, ol, blockquote, hr, ...) end a paragraph:
  one blank line between paragraphs; <br> is a line break; <li> starts a line with "- ";
  table cells are separated by a tab-free " | " -- no layout is attempted;
- whitespace in running text collapses to one space (HTML's rule); <pre> keeps its lines;
- links read `text (url)`, or just `url` when the text is the url (or empty); mailto: and
  anchors without href are text; images show their alt text;
- <head>, <style>, <script>, <template> and comments are dropped; entities are decoded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
_DROPPED = frozenset({"head", "style", "script", "template", "title", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []  # finished lines and paragraph marks
        self.line: list[str] = []
        self.dropped = 0
        self.pre = 0
        self.links: list[tuple[str, int]] = []  # (href, where its text starts in self.line)

    # ---- lines and paragraphs -----------------------------------------------------------------
    def _flush(self) -> None:
        text = "".join(self.line).strip()
        self.line = []
        self.links = []
        if text:
            self.out.append(text)

    def _paragraph(self) -> None:
        self._flush()
        if self.out and self.out[-1] != "":
            self.out.append("")

    def _write(self, text: str) -> None:
        if self.line and self.line[-1].endswith(" ") and text.startswith(" "):
            text = text.lstrip(" ")
        if not self.line and text.startswith(" "):
            text = text.lstrip(" ")
        if text:
            self.line.append(text)

    # ---- the parser's callbacks -----------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropped += 1
            return
        if self.dropped:
            return
        a = dict(attrs)
        if tag == "br":
            self._flush()
        elif tag == "li":
            self._flush()
            self._write("- ")
        elif tag in ("td", "th"):
            if self.line:
                self._write(" | ")
        elif tag == "a":
            self.links.append((a.get("href") or "", len(self.line)))
        elif tag == "img" and a.get("alt"):
            self._write(_SPACES.sub(" ", a["alt"] or ""))
        elif tag in _BLOCKS:
            self._paragraph()
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropped = max(0, self.dropped - 1)
            return
        if self.dropped:
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.line[start:]).strip()
            if href and not href.startswith(("#", "mailto:", "javascript:")):
                if not text or text == href:
                    self.line[start:] = [href]
                else:
                    self.line.append(f" ({href})")
        elif tag == "li":
            self._flush()
        elif tag in _BLOCKS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._paragraph()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self.dropped:
            return
        if self.pre:
            lines = data.split("\n")
            for i, ln in enumerate(lines):
                if i:
                    self._flush()
                if ln:
                    self.line.append(ln)
            return
        self._write(_SPACES.sub(" ", data))

    def text(self) -> str:
        self._flush()
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + ("\n" if self.out else "")


def html_to_text(html: str) -> str:
    """The text alternative of an HTML body (see the module docstring for the rules)."""
    converter = _Converter()
    converter.feed(html)
    converter.close()
    return converter.text()
