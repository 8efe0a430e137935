"""The MIME tree of a bounce, built by a linear splitter (the email package's for the rest).

The email package's feed parser reads a message one line at a time through a stack of
end-of-part matchers: about a microsecond per line, 40% of the parse of a bounce.  This
module builds the very same tree (same ``Message`` objects, same headers, same payload
strings, same preamble and epilogue) for the shapes bounces have, finding each part's end
with one compiled search over the text instead of a look at every line.  It follows the
feed parser's rules (Lib/email/feedparser.py, RFC 2046 section 5.1.1); where a message is
odd in a way whose handling it does not copy (a missing or repeated boundary, a header
block that starts with a continuation line, a unix "From " line, multipart/digest, a form
feed or other line break that str.splitlines() knows), it raises _Unusual and the caller
parses with the email package.  Every scan moves forward: the whole is linear in the input.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import re
from email.message import Message

from outpost.bounces.limits import (
    HEADER_COUNT_LIMIT,
    HEADER_SIZE_LIMIT,
    MIME_HEADER_SIZE_LIMIT,
    MIME_PARAM_LIMIT,
)


class BoundedPolicy(email.policy.Compat32):
    """compat32 with Postfix's header_size_limit: every header value is cut at
    HEADER_SIZE_LIMIT as it is parsed, MIME headers much shorter (the email package re-splits
    a Content-* value at every ';' on each get_param(), quadratic in the number of ';')."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        # Compat32.header_source_parse inlined (called once per header of every message).
        name, value = sourcelines[0].split(":", 1)
        return self.cut(name, (value.lstrip(" \t") + "".join(sourcelines[1:])).rstrip("\r\n"))

    def cut(self, name: str, value: str) -> tuple[str, str]:
        """``value`` within the limits for a header called ``name``."""
        if name[:8].lower() == "content-":
            value = ";".join(value[:MIME_HEADER_SIZE_LIMIT].split(";", MIME_PARAM_LIMIT)
                             [:MIME_PARAM_LIMIT])
        elif len(value) > HEADER_SIZE_LIMIT:
            value = value[:HEADER_SIZE_LIMIT]
        return name, value


POLICY = BoundedPolicy()


class BoundedMessage(Message):
    """A Message that keeps at most HEADER_COUNT_LIMIT headers (the rest are dropped as
    parsed).  Its headers are indexed by name for get() and get_all(), and its content type
    is computed once (the parser and every step ask for it; each ask walked the headers and
    split the value); both are forgotten whenever a header or the default type changes."""

    _ctype: str | None = None

    def set_raw(self, name: str, value: str) -> None:  # type: ignore[override]
        self._ctype = None
        if len(self._headers) < HEADER_COUNT_LIMIT:  # type: ignore[attr-defined]
            self._headers.append((name, value))  # type: ignore[attr-defined]

    # Lower-case name -> its fields, for get() and get_all() (each step asks for a dozen
    # headers, most of them absent, and each ask walked the whole list).  Built on the first
    # ask from the list it indexes; rebuilt when the list is another one or of another length
    # (replace_header, the one in-place change of the same length, forgets it).
    _index: dict[str, list[tuple[str, str]]] | None = None
    _indexed: tuple[list[tuple[str, str]], int] | None = None

    def _fields(self, name: str) -> list[tuple[str, str]] | None:
        headers = self._headers  # type: ignore[attr-defined]
        indexed = self._indexed
        index = self._index
        if (index is None or indexed is None or indexed[0] is not headers
                or indexed[1] != len(headers)):
            index = {}
            for field in headers:
                key = field[0].lower()
                same = index.get(key)
                if same is None:
                    index[key] = [field]
                else:
                    same.append(field)
            self._index = index
            self._indexed = (headers, len(headers))
            self._ctype = None  # computed from the list before
        return index.get(name.lower())

    def _fetch(self, name: str, value: object) -> object:
        # compat32's header_fetch_parse returns a str without surrogates as it is (it makes
        # a Header of one with them): non-ASCII goes the policy's way.
        if value.__class__ is str and value.isascii():  # type: ignore[attr-defined]
            return value
        return self.policy.header_fetch_parse(name, value)  # type: ignore[arg-type]

    def get(self, name: str, failobj: object = None) -> object:  # type: ignore[override]
        fields = self._fields(name)
        return self._fetch(*fields[0]) if fields else failobj

    def get_all(self, name: str, failobj: object = None) -> object:  # type: ignore[override]
        fields = self._fields(name)
        return [self._fetch(k, v) for k, v in fields] if fields else failobj

    def items(self) -> list[tuple[str, object]]:  # type: ignore[override]
        return [(k, self._fetch(k, v)) for k, v in self._headers]  # type: ignore[attr-defined]

    def get_content_type(self) -> str:
        headers = self._headers  # type: ignore[attr-defined]
        indexed = self._indexed
        if (self._ctype is None or indexed is None or indexed[0] is not headers
                or indexed[1] != len(headers)):
            # Message.get_content_type, on the index (built again first if stale).
            fields = self._fields("content-type")
            if not fields:
                ctype = self.get_default_type()
            else:
                ctype = str(self._fetch(*fields[0])).partition(";")[0].strip().lower()
                if ctype.count("/") != 1:
                    ctype = "text/plain"
            self._ctype = ctype
        return self._ctype

    def get_content_maintype(self) -> str:
        return self.get_content_type().partition("/")[0]  # Message's: split("/")[0]

    def get_param(self, param: str, failobj: object = None,  # type: ignore[override]
                  header: str = "content-type", unquote: bool = True) -> object:
        """Message.get_param, without its detour through RFC 2231 decoding for a plain
        ASCII value (every boundary and charset lookup asks; the detour was a third of the
        MIME tree's cost).  A value with "*" (an RFC 2231 name) or non-ASCII (compat32 makes
        it a Header) takes the email package's own path."""
        value = None
        name = header.lower()
        for k, v in self._headers:  # type: ignore[attr-defined]
            if k.lower() == name:
                value = v
                break
        if not unquote or not isinstance(value, str) or not value.isascii() or "*" in value:
            return super().get_param(param, failobj, header, unquote)
        # Message._get_params_preserve and decode_params, for such a value: each piece of
        # _parseparam split at its first "=" and stripped; get_param unquotes the value
        # (decode_params' quote() then unquote() is the identity: test_bounce_mime).
        wanted = param.lower()
        for p in _parseparam(value):
            k, eq, v = p.partition("=")
            if k.strip().lower() == wanted:
                return email.utils.unquote(v.strip() if eq else "")
        return failobj

    def __setitem__(self, name: str, val: object) -> None:  # type: ignore[override]
        self._ctype = None
        super().__setitem__(name, val)  # type: ignore[arg-type,assignment]

    def __delitem__(self, name: str) -> None:
        self._ctype = None
        super().__delitem__(name)

    def replace_header(self, _name: str, _value: object) -> None:  # type: ignore[override]
        self._ctype = None
        self._index = None
        super().replace_header(_name, _value)  # type: ignore[arg-type]

    def set_default_type(self, ctype: str) -> None:
        self._ctype = None
        super().set_default_type(ctype)


def message_from_bytes(data: bytes) -> Message:
    """``data`` (LF line endings, already bounded) as a tree of BoundedMessage: split here
    when it has a shape this module copies, by the email package otherwise."""
    if not (b"\r" in data or b"\x0b" in data or b"\x0c" in data or b"\x1c" in data
            or b"\x1d" in data or b"\x1e" in data):  # _ODD_BREAKS, without a generator
        text = data.decode("ascii", "surrogateescape")  # as email.parser.BytesParser
        try:
            return _entity(text, 0, len(text))
        except _Unusual:
            pass
    return email.message_from_bytes(data, _class=BoundedMessage, policy=POLICY)


class _Unusual(Exception):
    """A shape whose feed-parser handling this module does not copy."""


# The email package's split of a parameter list at its unquoted ";" (Lib/email/message.py).
_parseparam = email.message._parseparam  # type: ignore[attr-defined]

# Line breaks of str.splitlines() other than LF (the feed parser splits on them too); CR is
# gone already (dsn._normalize).
# Tested with ``in`` (memchr), not a character class: a regex is tried at every byte.
_ODD_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
# feedparser.headerRE: a header line, or a continuation.
# A run of header fields (feedparser.headerRE: a name, a colon; continuation lines), each
# line ending in LF or at the end of the part.
# Possessive quantifiers (no backtracking state kept; none could change a match: the name
# class has no ":", a line's run of [^\n] ends where LF or the end must follow, and nothing
# follows the outer repetitions).
_HEADER_BLOCK = re.compile(
    r"(?:[\041-\071\073-\176]*+:[^\n]*+(?:\n|\Z)(?:[ \t][^\n]*+(?:\n|\Z))*+)*+")
# One field of such a block: its name, and its value without the blanks after the colon
# and without the last LF (compat32's header_source_parse).
_FIELD = re.compile(r"^([\041-\071\073-\176]*+):[ \t]*+([^\n]*+(?:\n[ \t][^\n]*+)*+)",
                    re.M)
_BLANK_LINE = re.compile(r"^\n", re.M)  # what _blank_line() finds


def _headers(msg: Message, text: str, pos: int, end: int) -> int:
    """Read the header block at ``pos`` into ``msg``; return where the body starts (after
    the blank line, or at the first line that is not a header: feedparser's
    MissingHeaderBodySeparatorDefect).  One match finds the block, one findall its fields:
    (name, value) as BoundedPolicy.header_source_parse gives them."""
    if pos < end and text[pos] in " \t":
        raise _Unusual("continuation line first")
    block = _HEADER_BLOCK.match(text, pos, end)
    stop = block.end() if block else pos
    if stop > pos:
        fields = _FIELD.findall(text, pos, stop)
        if not fields[0][0] or text.find("\n:", pos, stop) >= 0:
            raise _Unusual("empty header name")
        if stop - pos > MIME_HEADER_SIZE_LIMIT or text.count(";", pos, stop) >= MIME_PARAM_LIMIT:
            fields = [POLICY.cut(name, value) for name, value in fields]  # a long field
        msg._headers = fields[:HEADER_COUNT_LIMIT]  # type: ignore[attr-defined]
    if stop >= end:
        return end
    if text[stop] == "\n":
        return stop + 1
    if text.startswith("From ", stop):
        raise _Unusual("envelope line among the headers")
    return stop


def _entity(text: str, pos: int, end: int) -> Message:
    """The part in text[pos:end] (end: where an enclosing boundary line, or for a
    delivery-status block a blank line, starts), parsed as the feed parser would."""
    msg = BoundedMessage(policy=POLICY)
    body = _headers(msg, text, pos, end)
    ctype = msg.get_content_type()
    maintype = ctype.split("/", 1)[0]
    if ctype == "message/delivery-status":
        msg._payload = _status_blocks(text, body, end)  # type: ignore[attr-defined]
    elif maintype == "message":
        msg._payload = [_entity(text, body, end)]  # type: ignore[attr-defined]
    elif maintype == "multipart":
        _multipart(msg, text, body, end)
    else:
        msg._payload = text[body:end]  # type: ignore[attr-defined]
    return msg


def _status_blocks(text: str, pos: int, end: int) -> list[Message]:
    """message/delivery-status: one header-only message per block, a blank line ending
    each (feedparser pushes NLCRE as the end matcher); every further blank line between two
    blocks is an empty message of its own, as there."""
    blocks: list[Message] = []
    while True:
        stop = _blank_line(text, pos, end)
        if stop < 0:
            stop = end
        sub = _entity(text, pos, stop)
        if sub.get_content_maintype() in ("message", "multipart"):
            raise _Unusual("container inside a delivery-status block")
        blocks.append(sub)
        pos = min(stop + 1, end)
        if pos >= end:
            return blocks


def _blank_line(text: str, pos: int, end: int) -> int:
    """Where the first empty line in text[pos:end] starts (-1: none): the start of
    _BLANK_LINE.search(text, pos, end), found with str.find."""
    if pos < end and text[pos] == "\n" and (pos == 0 or text[pos - 1] == "\n"):
        return pos
    j = text.find("\n\n", pos, end)
    return -1 if j < 0 else j + 1


def _multipart(msg: Message, text: str, pos: int, end: int) -> None:
    """RFC 2046 section 5.1.1 as feedparser reads it: preamble, parts, close delimiter,
    epilogue; the line break before each delimiter belongs to the delimiter."""
    boundary = msg.get_boundary()
    if boundary is None or msg.get_content_type() == "multipart/digest":
        raise _Unusual("no boundary, or digest (its parts default to message/rfc822)")
    key = "--" + boundary
    at, close = _delimiter(text, key, pos, end)
    if at < 0 or close:
        raise _Unusual("start boundary not found")  # dsn._repair_boundary's case
    if at > pos:
        msg.preamble = _chop_eol(text[pos:at])
    parts: list[Message] = []
    while True:
        start = _line_end(text, at, end)
        at, close = _delimiter(text, key, start, end)
        if at == start:
            raise _Unusual("consecutive delimiter lines")
        part = _entity(text, start, end if at < 0 else at)
        _chop_part(_last_created(part))
        parts.append(part)
        if at < 0:
            break  # no close delimiter (CloseBoundaryNotFoundDefect): no epilogue
        if close:
            msg.epilogue = text[_line_end(text, at, end):end]
            break
    msg._payload = parts  # type: ignore[attr-defined]


def _delimiter(text: str, key: str, pos: int, end: int) -> tuple[int, bool]:
    """The first delimiter line in text[pos:end] (``pos`` starts a line): where it starts
    (-1: none) and whether it closes.  feedparser's boundaryre: the boundary, "--" or not,
    blanks, end of line.  str.find, not a regex: a boundary is a new pattern per message."""
    i = pos
    while True:
        i = text.find(key, i, end)
        if i < 0:
            return -1, False
        if i == pos or text[i - 1] == "\n":
            nl = text.find("\n", i, end)
            rest = text[i + len(key):end if nl < 0 else nl].rstrip(" \t")
            if rest == "" or rest == "--":
                return i, rest == "--"
        i += 1


def _line_end(text: str, pos: int, end: int) -> int:
    """Where the line holding ``pos`` ends (after its LF), at most ``end``."""
    nl = text.find("\n", pos, end)
    return end if nl < 0 else nl + 1


def _chop_eol(value: str) -> str:
    return value[:-1] if value.endswith("\n") else value


def _last_created(part: Message) -> Message:
    """The message the feed parser made last while parsing ``part`` (its ``_last``): the
    part itself for a leaf or a multipart, the innermost last one inside a message/*."""
    while part.get_content_maintype() == "message":
        part = part._payload[-1]  # type: ignore[attr-defined]
    return part


def _chop_part(part: Message) -> None:
    """The line break before a delimiter is the delimiter's (feedparser strips it from the
    part's payload, or from the epilogue of a nested multipart)."""
    if part.get_content_maintype() == "multipart":
        if part.epilogue == "":
            part.epilogue = None
        elif part.epilogue is not None:
            part.epilogue = _chop_eol(part.epilogue)
    elif isinstance(part._payload, str):  # type: ignore[attr-defined]
        part._payload = _chop_eol(part._payload)  # type: ignore[attr-defined]


# Line breaks str.splitlines() knows besides LF, in decoded text.
_ODD_TEXT_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def headers_from_text(text: str) -> Message:
    """The header block at the start of ``text`` (decoded text, as a text/rfc822-headers
    part or headers quoted in a bounce), as email.parser.HeaderParser would read it; the
    body is not kept."""
    if not any(c in text for c in _ODD_TEXT_BREAKS):
        msg = BoundedMessage(policy=POLICY)
        try:
            _headers(msg, text, 0, len(text))
            return msg
        except _Unusual:
            pass
    return email.parser.HeaderParser(BoundedMessage, policy=POLICY).parsestr(text)
