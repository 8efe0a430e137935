"""CSS inlining (css-inline) with no `"` left in the CSS it writes into style attributes.

css-inline 0.11 (the version held in pyproject.toml) writes the declarations it inlines into
`style="..."` as they are, quoting only font-family: a `"` in CSS (`url("...")`, a string,
or an HTML-escaped value that the HTML parser decoded from a style attribute) ended the
attribute, and a variable's spaces then wrote attributes of their own
(`<div style="background: url("x" onmouseover="...")">`). Before inlining, every `"` in the
CSS the inliner reads (each <style> element's text and each style attribute's value) is
rewritten without one: a double-quoted string becomes a single-quoted one (its `'` escaped
as `\\27 `), any other `"` becomes `\\22 `. CSS reads both the same way (CSS Syntax 3, §4.3.5
and §4.3.7), so the styles are unchanged; the HTML can no longer be broken out of.

Each pass is one left-to-right regular-expression scan with no nested repetition (linear).
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Iterator

# A CSS comment, a double- or single-quoted string (possibly unclosed), or an escape.
_CSS_TOKEN = re.compile(r"""/\*[\s\S]*?(?:\*/|\Z)|"((?:[^"\\\n]|\\[\s\S])*)("?)|'(?:[^'\\\n]|\\[\s\S])*'?|\\[\s\S]""")
_IN_STRING = re.compile(r"""\\[\s\S]|['"]""")
# One attribute of a start tag (a quoted value may hold < and >), after any spaces or "/".
_ATTR = re.compile(r"""[\s/]*([^\s"'>/=]+)(?:(\s*=\s*)("[^"]*"|'[^']*'|[^\s>]*))?""")
# A start tag's name and its attributes (as many _ATTR as follow; nothing after them is
# required, so the match never backtracks).
_START_TAG = re.compile(r"""<([A-Za-z][^\s/>]*)((?:[\s/]*[^\s"'>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*))?)*)""")
# A <style> element's text: raw text up to its end tag (HTML §13.2.5.1: "</style" then a
# space, "/" or ">").
_STYLE_TEXT = re.compile(r"(<style\b[^<>]*>)([\s\S]*?)(?=</style[\s/>]|\Z)", re.IGNORECASE)


def _in_string(m: re.Match[str]) -> str:
    s = m.group()
    return {'"': "\\22 ", "'": "\\27 ", '\\"': "\\22 ", "\\'": "\\27 "}.get(s, s)


def _token(m: re.Match[str]) -> str:
    s = m.group()
    if s.startswith("/*"):
        return s.replace('"', "'")  # a comment: any text will do
    if s.startswith('"'):
        return "'" + _IN_STRING.sub(_in_string, m.group(1)) + ("'" if m.group(2) else "")
    if s.startswith("'"):
        return s.replace('"', "\\22 ") if s.count("\\") == 0 else _single(s)
    return "\\22 " if s == '\\"' else s


def _single(s: str) -> str:
    """A single-quoted string with escapes: its `"` (escaped or not) as \\22, the rest kept."""
    return _IN_STRING.sub(lambda m: "\\22 " if m.group() in ('"', '\\"') else m.group(), s)


def css_without_double_quotes(css: str) -> str:
    """`css` read the same by CSS, with no `"` character in it."""
    if '"' not in css:
        return css
    return _CSS_TOKEN.sub(_token, css).replace('"', "\\22 ")


def _attribute(m: re.Match[str]) -> str:
    name, eq, value = m.group(1), m.group(2), m.group(3)
    if name.lower() != "style" or value is None:
        return m.group()
    if value[:1] in ("'", '"') and len(value) > 1 and value[-1] == value[0]:
        value = value[1:-1]
    css = css_without_double_quotes(_html.unescape(value))
    return m.group()[:m.start(1) - m.start()] + f'{name}{eq}"{_html.escape(css, quote=True)}"'


def _tag(m: re.Match[str]) -> str:
    attrs = m.group(2)
    if "style" not in attrs.lower():
        return m.group()
    return f"<{m.group(1)}{_ATTR.sub(_attribute, attrs)}"


def without_double_quotes_in_css(html: str) -> str:
    """`html` with every style attribute's value and every <style> element's text rewritten by
    css_without_double_quotes (the rest of the document as it was). Two linear passes, the
    <style> text last: whatever the first wrote there is rewritten too."""
    html = _START_TAG.sub(_tag, html)
    return _STYLE_TEXT.sub(lambda m: m.group(1) + css_without_double_quotes(m.group(2)), html)


_COMMENT = re.compile(r"/\*[\s\S]*?(?:\*/|\Z)")
_BRACE = re.compile(r"[{}]")
_COMBINATOR = re.compile(r"[\s>+~]+")
_KEYS = re.compile(r"([#.]?)(-?[A-Za-z_][\w-]*)")


class _Elements:
    """How many start tags the HTML has, by name, by class and by id (one pass)."""

    def __init__(self, html: str) -> None:
        self.total = 3  # the html, head and body the parser adds when they are not written
        self.by_key: dict[str, int] = {"html": 1, "head": 1, "body": 1}
        for tag in _START_TAG.finditer(html):
            self.total += 1
            self._add(tag.group(1).lower())
            if "=" in (attrs := tag.group(2)):
                self._attributes(attrs)
        self.by_key["tbody"] = self.by_key.get("tbody", 0) + self.by_key.get("table", 0)  # added per table
        self.total += self.by_key.get("table", 0)

    def _attributes(self, attrs: str) -> None:
        for attr in _ATTR.finditer(attrs):
            name, value = attr.group(1).lower(), (attr.group(3) or "").strip("\"'")
            if name == "class":
                for c in set(_html.unescape(value).lower().split()):
                    self._add("." + c)
            elif name == "id":
                self._add("#" + _html.unescape(value).lower())

    def _add(self, key: str) -> None:
        self.by_key[key] = self.by_key.get(key, 0) + 1

    def matching(self, selector: str) -> int:
        """At most how many elements `selector` can match: by its last compound's id, classes
        or name (what a browser's rule hash keys on; case-insensitive, as in quirks mode);
        every element when it has none, or when it has anything not read here (an escape,
        parentheses, an attribute, a namespace): an over-estimate, never an under-estimate."""
        if any(c in selector for c in "\\()[]|\"'"):
            return self.total
        last = _COMBINATOR.split(selector.strip())[-1].split(":")[0]
        keys = [m.group(1) + m.group(2).lower() for m in _KEYS.finditer(last)]
        return min((self.by_key.get(k, 0) for k in keys), default=self.total)


def inlined_bytes_bound(html: str) -> int:
    """At most how many bytes css-inline can add to `html`: for each <style> rule, its
    declarations' size times the elements its selectors can match. css-inline's time and
    output grow with that product (50 `p` rules on 196,020 <p> wrote 70 MB in 7 s): the
    caller checks the bound against its budget before inlining."""
    css = "".join(m.group(2) for m in _STYLE_TEXT.finditer(html))
    if not css:
        return 0
    elements = _Elements(html)
    bound = 0
    for selectors, declarations in _rules(_COMMENT.sub("", css)):
        size = len(declarations.encode("utf-8")) + 2
        bound += size * sum(elements.matching(sel) for sel in selectors.split(","))
    return bound


def _rules(css: str) -> Iterator[tuple[str, str]]:
    """(selectors, declarations) of each innermost block (a rule inside @media too)."""
    start, selectors = 0, None
    for m in _BRACE.finditer(css):
        text = css[start:m.start()]
        if m.group() == "{":
            selectors = text
        elif selectors is not None:
            yield selectors, text
            selectors = None
        start = m.end()


def inline_css(html: str) -> str:
    """<style> rules into style attributes (css-inline); <link> stylesheets are dropped, never
    fetched (remote loading off: no request leaves for a URL a template names). HTML without
    <style> or <link> is returned as it is."""
    lowered = html.lower()
    if "<style" not in lowered and "<link" not in lowered:
        return html
    import css_inline

    return str(css_inline.CSSInliner(load_remote_stylesheets=False).inline(without_double_quotes_in_css(html)))
