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

# A CSS comment, a double- or single-quoted string (possibly unclosed), or an escape.
_CSS_TOKEN = re.compile(r"""/\*[\s\S]*?(?:\*/|\Z)|"((?:[^"\\\n]|\\[\s\S])*)("?)|'(?:[^'\\\n]|\\[\s\S])*'?|\\[\s\S]""")
_IN_STRING = re.compile(r"""\\[\s\S]|['"]""")
_TAG_OPEN = re.compile(r"<([A-Za-z][^\s/>]*)")
# One attribute of a start tag (a quoted value may hold < and >), after any spaces or "/".
_ATTR = re.compile(r"""[\s/]*([^\s"'>/=]+)(?:(\s*=\s*)("[^"]*"|'[^']*'|[^\s>]*))?""")
_STYLE_END = re.compile(r"</style", re.IGNORECASE)


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


def without_double_quotes_in_css(html: str) -> str:
    """`html` with every <style> element's text and every style attribute's value rewritten by
    css_without_double_quotes (the rest of the document as it was). One pass: each start tag's
    attributes are read one by one, a <style> element's text up to its end tag."""
    out, i = [], 0
    while (tag := _TAG_OPEN.search(html, i)) is not None:
        out.append(html[i:tag.end()])
        i = tag.end()
        while (attr := _ATTR.match(html, i)) is not None:
            out.append(_attribute(attr))
            i = attr.end()
        if tag.group(1).lower() == "style" and (gt := html.find(">", i)) != -1:
            out.append(html[i:gt + 1])
            i = gt + 1
            end = _STYLE_END.search(html, i)
            stop = len(html) if end is None else end.start()
            out.append(css_without_double_quotes(html[i:stop]))
            i = stop
    out.append(html[i:])
    return "".join(out)


def inline_css(html: str) -> str:
    """<style> rules into style attributes (css-inline); <link> stylesheets are dropped, never
    fetched (remote loading off: no request leaves for a URL a template names). HTML without
    <style> or <link> is returned as it is."""
    lowered = html.lower()
    if "<style" not in lowered and "<link" not in lowered:
        return html
    import css_inline

    return str(css_inline.CSSInliner(load_remote_stylesheets=False).inline(without_double_quotes_in_css(html)))
