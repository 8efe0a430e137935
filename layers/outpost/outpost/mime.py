"""Build the RFC 5322 / MIME message from a stored send request.

Always 7-bit clean on the wire (quoted-printable or base64 bodies) so that 8BITMIME is never
needed; UTF-8 headers (RFC 6532) only when an address *written in the headers* has a non-ASCII
local part, which then also needs SMTPUTF8 from the receiving server. Bcc is never written, so
a Bcc recipient's UTF-8 address needs SMTPUTF8 for its own transaction only: the sender asks
for it per recipient, from that recipient's envelope address or `build_message`'s flag.

`check_message` runs the same code on a request with empty bodies and attachments: the API
calls it, so that whatever it accepts also builds when the sender builds it.
"""

from __future__ import annotations

import base64
import io
import os
import time
from binascii import b2a_base64
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate

from .addresses import Address, parse_address
from .errors import MessageBuildError
from .models import Attachment, SendRequest
from .stored_request import StoredAttachment, StoredRequest

# The API checks its SendRequest; the sender builds from the StoredRequest it read back.
Content = SendRequest | StoredRequest

FetchUpload = Callable[[str], bytes]

MAX_LINE = 998  # RFC 5322 §2.1.1, CRLF excluded


class _Folding(EmailPolicy):
    """policy.SMTP / SMTPUTF8, minus a CPython folding bug: an address list whose display name
    holds a word longer than the line can be folded with an empty line in it
    ("To: =?utf-8?q?...?= <a@x>,\r\n\r\n xxxx... <b@x>"), and an empty line ends the header
    section at the receiver: every field after it becomes body. A folded field never needs a
    line that is empty or only white space (RFC 5322 §3.2.2 forbids one), so those go; the
    CRLFs removed are the ones unfolding removes anyway, so the value does not change."""

    def fold(self, name: str, value: str) -> str:
        if self._own_words(name, value):
            return _encoded_words(name, str(value), self.linesep)
        return _drop_blank_lines(super().fold(name, value), self.linesep)

    def fold_binary(self, name: str, value: str) -> bytes:
        if self._own_words(name, value):
            return _encoded_words(name, str(value), self.linesep).encode("ascii")
        sep = self.linesep.encode("ascii")
        folded = super().fold_binary(name, value)
        lines = folded.split(sep)
        return sep.join(line for line in lines[:-1] if line.strip(b" \t")) + sep + lines[-1]

    def _own_words(self, name: str, value: str) -> bool:
        """A non-ASCII unstructured field (Subject, a custom header) written as encoded words:
        CPython's folder can drop the space between two words when it splits encoded words
        (":xxx... =?\U0001f600xxx xxx..." came out with the space gone), so those are encoded
        here instead, in SMTPUTF8 messages too (CPython still folds long ones into encoded words,
        and RFC 6532 keeps encoded words valid there). Structured fields (addresses, dates, ids,
        MIME) keep the email package's."""
        return name.lower() not in _STRUCTURED and not str(value).isascii()


# Fields whose syntax the email package must fold itself (RFC 5322 §3.3-3.6, RFC 2045).
_STRUCTURED = frozenset({"from", "sender", "to", "cc", "bcc", "reply-to", "date", "message-id",
                         "in-reply-to", "references", "mime-version", "content-type",
                         "content-transfer-encoding", "content-disposition", "content-id"})
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 60 base64 chars + "?=" = 72


def _encoded_words(name: str, value: str, linesep: str) -> str:
    """RFC 2047 §2 and §5(1): the whole value as base64 "B" encoded words of whole characters,
    one per line. White space lives inside the encoded text, so unfolding and decoding give the
    value back exactly (the white space between adjacent encoded words is ignored, RFC 2047 §6.2).
    Linear in the value (at most 998 characters by the models)."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    for ch in value:
        b = ch.encode("utf-8", "surrogateescape")
        if size + len(b) > _WORD_BYTES and chunk:
            words.append(_b_word(b"".join(chunk)))
            chunk, size = [], 0
        chunk.append(b)
        size += len(b)
    if chunk or not words:
        words.append(_b_word(b"".join(chunk)))
    return f"{name}: " + (linesep + " ").join(words) + linesep


def _b_word(data: bytes) -> str:
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


def _drop_blank_lines(folded: str, linesep: str) -> str:
    lines = folded.split(linesep)
    return linesep.join(line for line in lines[:-1] if line.strip(" \t")) + linesep + lines[-1]


_SMTP = _Folding(linesep="\r\n")
_SMTPUTF8 = _Folding(linesep="\r\n", utf8=True)


def _header_address(a: Address, utf8: bool) -> HeaderAddress:
    domain = a.domain if utf8 else a.ascii_domain
    return HeaderAddress(display_name=a.display_name, username=a.local, domain=domain)


def message_id_header(message_id: str, domain: str) -> str:
    return f"<{message_id}@{domain}>"


def _attachment_bytes(a: Attachment | StoredAttachment, fetch_upload: FetchUpload | None) -> bytes:
    if a.content is not None:
        return base64.b64decode(a.content)
    if fetch_upload is None or a.upload_id is None:
        raise ValueError(f"attachment {a.filename!r} is an upload and no upload store was given")
    return fetch_upload(a.upload_id)


def headers_need_smtputf8(req: Content) -> bool:
    """Whether the headers as sent need SMTPUTF8: an address written in them (From, To, Cc,
    Reply-To; never Bcc, which is not sent) has a non-ASCII local part (RFC 6531 §3.2, RFC 6532).
    A non-ASCII domain alone is written as its A-label; a non-ASCII subject or header value as
    RFC 2047 encoded words."""
    written = [req.from_, *req.to, *req.cc, *req.reply_to]
    return any(parse_address(v).needs_smtputf8 for v in written)


def build_message(req: Content, message_id: str, created: float | None = None, *,
                  fetch_upload: FetchUpload | None = None) -> tuple[bytes, bool]:
    """The message bytes (CRLF line endings) and whether its headers need SMTPUTF8.

    `fetch_upload(upload_id)` returns an uploaded attachment's bytes (S3 in production); it
    is only called for attachments sent by upload_id.
    """
    return _compose(req, message_id, created, fetch_upload=fetch_upload, skeleton=False, splice=True)


def check_message(req: Content) -> None:
    """Build `req`'s message with empty bodies and attachments (the same code as the sender's
    build, minus the bytes) and check what a receiver will see: every header line within
    RFC 5322's 998 characters, and exactly the header fields that were set (nothing a value
    could smuggle in). Raises MessageBuildError naming the field at fault."""
    data, _ = _compose(req, "check", 0.0, fetch_upload=None, skeleton=True, splice=False)
    # Bodies are empty here: every line is a header line or a boundary.
    for line in data.split(b"\r\n"):
        if len(line) > MAX_LINE:
            raise MessageBuildError(_field_of(line.split(b":", 1)[0].decode("ascii", "replace")),
                                    f"a header line would be longer than {MAX_LINE} characters")
    head = data.split(b"\r\n\r\n", 1)[0]
    got = Counter(line.split(b":", 1)[0].decode("ascii", "replace").lower()
                  for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t"))
    wanted = Counter(["from", "subject", "date", "message-id", "mime-version", "content-type"])
    wanted.update(f for f, v in (("to", req.to), ("cc", req.cc), ("reply-to", req.reply_to)) if v)
    wanted.update(n.lower() for n in req.headers)
    got.pop("content-transfer-encoding", None)  # on the top level of a single part only
    for name in sorted(set(got) | set(wanted)):
        if got[name] != wanted[name]:
            raise MessageBuildError(_field_of(name), f"the {name!r} header field would come out "
                                    f"{got[name]} times instead of {wanted[name]}")


_FIELDS = {"from": "from", "to": "to", "cc": "cc", "reply-to": "reply_to", "subject": "subject"}


def _field_of(header: str) -> str:
    return _FIELDS.get(header.lower(), f"headers.{header}")


@contextmanager
def _blame(field: str) -> Iterator[None]:
    """Turn the email package's refusal into a MessageBuildError naming the request field."""
    try:
        yield
    except (ValueError, TypeError, IndexError, UnicodeError) as exc:
        if isinstance(exc, MessageBuildError):
            raise
        raise MessageBuildError(field, f"cannot be written as a header: {exc}") from None


def _set(msg: EmailMessage, field: str, name: str, value: object) -> None:
    with _blame(field):
        msg[name] = value


def _compose(req: Content, message_id: str, created: float | None, *,
             fetch_upload: FetchUpload | None, skeleton: bool, splice: bool) -> tuple[bytes, bool]:
    """The message, built by the email package. With `splice`, each attachment part is built
    with a one-line placeholder for its body, and the bodies are base64-encoded straight into
    the output afterwards (:func:`_splice`), one attachment at a time: the same bytes as
    building them in (tests/unit/test_mime_memory.py), without the email package's copies of
    every body (the encoded str, its lines, the generator's buffer, the final bytes)."""
    msg, utf8 = _headed(req, message_id, created)
    if skeleton:
        req = req.model_copy(update={
            "text": None if req.text is None else "",
            "html": None if req.html is None else "",
            "attachments": [a.model_copy(update={"content": "", "upload_id": None})
                            for a in req.attachments]})
    _add_body(msg, req)
    spliced = _add_attachments(msg, list(req.attachments), fetch_upload, splice)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # only the top level carries it (RFC 2045 §4)
    if not spliced:
        return msg.as_bytes(), utf8
    return _splice(msg.as_bytes(), spliced, fetch_upload), utf8


def _headed(req: Content, message_id: str, created: float | None) -> tuple[EmailMessage, bool]:
    """A message with the request's header fields and no body yet; True when they need
    SMTPUTF8 (RFC 6532)."""
    addrs = {name: [parse_address(v) for v in getattr(req, name)] for name in ("to", "cc", "reply_to")}
    sender = parse_address(req.from_)
    utf8 = headers_need_smtputf8(req)
    pol = _SMTPUTF8 if utf8 else _SMTP

    msg = EmailMessage(policy=pol)
    _set(msg, "from", "From", _header_address(sender, utf8))
    for field, name in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
        if addrs[field]:
            _set(msg, field, name, [_header_address(a, utf8) for a in addrs[field]])
    _set(msg, "subject", "Subject", req.subject)
    msg["Date"] = formatdate(created if created is not None else time.time(), usegmt=True)
    msg["Message-ID"] = message_id_header(message_id, sender.ascii_domain)
    for name, value in req.headers.items():
        _set(msg, f"headers.{name}", name, value)
    return msg, utf8


def _add_body(msg: EmailMessage, req: Content) -> None:
    """The text and/or HTML body (multipart/alternative when both)."""
    if req.text is not None and req.html is not None:
        msg.set_content(req.text, cte=_cte(req.text))
        msg.add_alternative(req.html, subtype="html", cte=_cte(req.html))
    elif req.html is not None:
        msg.set_content(req.html, subtype="html", cte=_cte(req.html))
    else:
        msg.set_content(req.text or "", cte=_cte(req.text or ""))


def _add_attachments(msg: EmailMessage, attachments: list[Attachment | StoredAttachment],
                     fetch_upload: FetchUpload | None, splice: bool
                     ) -> list[tuple[bytes, Attachment | StoredAttachment]]:
    """Inline parts (related to the HTML body) and attachments; with `splice`, each with a
    placeholder body, returned with its attachment for :func:`_splice`."""
    inline = [(i, a) for i, a in enumerate(attachments) if a.content_id]
    regular = [(i, a) for i, a in enumerate(attachments) if not a.content_id]
    nonce = os.urandom(8).hex()  # no request can have written it: the placeholder is unique
    spliced: list[tuple[bytes, Attachment | StoredAttachment]] = []

    def body(a: Attachment | StoredAttachment) -> bytes:
        return b"" if splice else _attachment_bytes(a, fetch_upload)

    def placeholder(container: EmailMessage, a: Attachment | StoredAttachment) -> None:
        if splice:
            token = f"{_PLACEHOLDER}-{nonce}-{len(spliced)}"
            parts = container.get_payload()
            assert isinstance(parts, list) and isinstance(parts[-1], EmailMessage)
            part = parts[-1]
            # As the email package leaves a base64 body: every line ends in a newline.
            part.set_payload(token + "\n")
            spliced.append((token.encode("ascii"), a))

    if inline:
        html_part = next((p for p in msg.walk() if p.get_content_type() == "text/html"), None)
        target = html_part if html_part is not None else msg
        target.make_related() if target is msg else None
        for i, a in inline:
            maintype, subtype = a.content_type.split("/", 1)
            with _blame(f"attachments[{i}]"):
                target.add_related(body(a), maintype=maintype, subtype=subtype, filename=a.filename,
                                   cid=f"<{a.content_id}>", disposition="inline")
            placeholder(target, a)
    for i, a in regular:
        maintype, subtype = a.content_type.split("/", 1)
        with _blame(f"attachments[{i}]"):
            msg.add_attachment(body(a), maintype=maintype, subtype=subtype, filename=a.filename)
        placeholder(msg, a)
    return spliced


_PLACEHOLDER = "OUTPOST-ATTACHMENT-BODY"
_B64_LINE = 57  # input bytes per base64 line: the email package's 76 characters (78 // 4 * 3)
_B64_BLOCK = _B64_LINE * 4096  # input bytes encoded at a time (~310 KB of output)


def _splice(skeleton: bytes, spliced: list[tuple[bytes, Attachment | StoredAttachment]],
            fetch_upload: FetchUpload | None) -> bytes:
    """`skeleton` with each placeholder line replaced by its attachment's base64 body, written
    once into one buffer (BytesIO hands that buffer over without a copy). Only one
    attachment's raw bytes are held at a time."""
    out = io.BytesIO()
    pos = 0
    for token, a in spliced:
        at = skeleton.index(token + b"\r\n", pos)
        out.write(memoryview(skeleton)[pos:at])
        data = memoryview(_attachment_bytes(a, fetch_upload))
        for start in range(0, len(data), _B64_BLOCK):
            block = data[start:start + _B64_BLOCK]
            out.write(b"".join([b2a_base64(block[i:i + _B64_LINE]) for i in range(0, len(block), _B64_LINE)])
                      .replace(b"\n", b"\r\n"))
        del data
        pos = at + len(token) + 2
    out.write(memoryview(skeleton)[pos:])
    return out.getvalue()


def _cte(text: str) -> str:
    """7bit when it can be, else quoted-printable: the wire stays 7-bit clean."""
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"
