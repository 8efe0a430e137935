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
import email.policy
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
        value = (value.lstrip(" \t") + "".join(sourcelines[1:])).rstrip("\r\n")
        if name[:8].lower() == "content-":
            value = ";".join(value[:MIME_HEADER_SIZE_LIMIT].split(";", MIME_PARAM_LIMIT)
                             [:MIME_PARAM_LIMIT])
        elif len(value) > HEADER_SIZE_LIMIT:
            value = value[:HEADER_SIZE_LIMIT]
        return name, value


POLICY = BoundedPolicy()


class BoundedMessage(Message):
    """A Message that keeps at most HEADER_COUNT_LIMIT headers (the rest are dropped as
    parsed): every msg.get() walks the whole header list.  Its content type is computed once
    (the parser and every step ask for it; each ask walks the headers and splits the value)
    and forgotten whenever a header or the default type changes."""

    _ctype: str | None = None

    def set_raw(self, name: str, value: str) -> None:  # type: ignore[override]
        self._ctype = None
        if len(self._headers) < HEADER_COUNT_LIMIT:  # type: ignore[attr-defined]
            self._headers.append((name, value))  # type: ignore[attr-defined]

    def get_content_type(self) -> str:
        if self._ctype is None:
            self._ctype = super().get_content_type()
        return self._ctype

    def __setitem__(self, name: str, val: object) -> None:  # type: ignore[override]
        self._ctype = None
        super().__setitem__(name, val)  # type: ignore[arg-type]

    def __delitem__(self, name: str) -> None:
        self._ctype = None
        super().__delitem__(name)

    def replace_header(self, _name: str, _value: object) -> None:  # type: ignore[override]
        self._ctype = None
        super().replace_header(_name, _value)  # type: ignore[arg-type]

    def set_default_type(self, ctype: str) -> None:
        self._ctype = None
        super().set_default_type(ctype)


def message_from_bytes(data: bytes) -> Message:
    """``data`` (LF line endings, already bounded) as a tree of BoundedMessage: split here
    when it has a shape this module copies, by the email package otherwise."""
    if not _ODD_BREAKS.search(data):
        text = data.decode("ascii", "surrogateescape")  # as email.parser.BytesParser
        try:
            return _entity(text, 0, len(text))
        except _Unusual:
            pass
    return email.message_from_bytes(data, _class=BoundedMessage, policy=POLICY)


class _Unusual(Exception):
    """A shape whose feed-parser handling this module does not copy."""


# Line breaks of str.splitlines() other than LF (the feed parser splits on them too); CR is
# gone already (dsn._normalize).
_ODD_BREAKS = re.compile(rb"[\r\x0b\x0c\x1c\x1d\x1e]")
# feedparser.headerRE: a header line, or a continuation.
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_BLANK_LINE = re.compile(r"^\n", re.M)


def _headers(msg: Message, text: str, pos: int, end: int) -> int:
    """Read the header block at ``pos`` into ``msg``; return where the body starts (after
    the blank line, or at the first line that is not a header: feedparser's
    MissingHeaderBodySeparatorDefect)."""
    block: list[str] = []
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl + 1
        if text[pos] == "\n":
            pos = stop
            break
        if not _HEADER_LINE.match(text, pos, stop):
            break
        line = text[pos:stop]
        if line[0] in " \t":
            if not block:
                raise _Unusual("continuation line first")
            block.append(line)
        else:
            if line.startswith("From ") or line[0] == ":":
                raise _Unusual("envelope line or empty header name")
            if block:
                msg.set_raw(*POLICY.header_source_parse(block))
            block = [line]
        pos = stop
    if block:
        msg.set_raw(*POLICY.header_source_parse(block))
    return pos


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
        m = _BLANK_LINE.search(text, pos, end)
        stop = m.start() if m else end
        sub = _entity(text, pos, stop)
        if sub.get_content_maintype() in ("message", "multipart"):
            raise _Unusual("container inside a delivery-status block")
        blocks.append(sub)
        pos = min(stop + 1, end)
        if pos >= end:
            return blocks


def _multipart(msg: Message, text: str, pos: int, end: int) -> None:
    """RFC 2046 section 5.1.1 as feedparser reads it: preamble, parts, close delimiter,
    epilogue; the line break before each delimiter belongs to the delimiter."""
    boundary = msg.get_boundary()
    if boundary is None or msg.get_content_type() == "multipart/digest":
        raise _Unusual("no boundary, or digest (its parts default to message/rfc822)")
    delim = re.compile(r"^--" + re.escape(boundary) + r"(--)?[ \t]*$", re.M)
    m = delim.search(text, pos, end)
    if m is None or m.group(1):
        raise _Unusual("start boundary not found")  # dsn._repair_boundary's case
    if m.start() > pos:
        msg.preamble = _chop_eol(text[pos:m.start()])
    parts: list[Message] = []
    while True:
        start = _line_end(text, m.end(), end)
        nxt = delim.search(text, start, end)
        if nxt is not None and nxt.start() == start:
            raise _Unusual("consecutive delimiter lines")
        part = _entity(text, start, nxt.start() if nxt else end)
        _chop_part(_last_created(part))
        parts.append(part)
        if nxt is None:
            break  # no close delimiter (CloseBoundaryNotFoundDefect): no epilogue
        m = nxt
        if m.group(1):
            msg.epilogue = text[_line_end(text, m.end(), end):end]
            break
    msg._payload = parts  # type: ignore[attr-defined]


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
