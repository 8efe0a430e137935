"""A client's own MIME message (SMTP submission's DATA): check it, then finish it for sending.

The message is sent as written, not rebuilt: Outpost reads only its header section, and
changes only what RFC 5322 and RFC 6409 (message submission) let a submission server change:

- Bcc fields are removed (RFC 5322 §3.6.3: the recipients come from the envelope);
- Message-ID and Date are added when missing (RFC 6409 §8.2, §8.3);
- Outpost's own control field, `Outpost-Send-At` (a scheduled send: the API's `send_at`), is
  read and removed: it is an instruction to Outpost, not part of the message (a missing Date
  is then the send time, as the API's);
- nothing else: the body and every other header field stay byte for byte.

Checks (each a limit with a name): the whole message within MAX_MESSAGE_BYTES; no bare CR or
LF (`bare_line_end`: every line ends CRLF, RFC 5321 §2.3.8); every line
within RFC 5322 §2.1.1's 998 octets; the header section within MAX_HEADER_BYTES, every field a
valid `name: value` (RFC 5322 §2.2); exactly one From holding exactly one mailbox (§3.6.2:
several need a Sender, which Outpost does not sign for); at most one of each field §3.6 caps at
one. A bad From is a ForbiddenError (550 5.7.1: not a sender Outpost sends for); a malformed
message an InvalidRequestError. Every scan is linear in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import formatdate, getaddresses

from .addresses import Address, AddressError, parse_address
from .errors import ForbiddenError, InvalidRequestError, PayloadTooLargeError
from .mime import MAX_LINE, message_id_header
from .models import MAX_MESSAGE_BYTES

__all__ = ["MAX_HEADER_BYTES", "SEND_AT_FIELD", "RawMessage", "bare_line_end", "inspect_raw"]

MAX_HEADER_BYTES = 1024 * 1024  # the header section (Postfix: header_size_limit per field, 100 KB)
MAX_FIELDS = 1000  # header fields in one message
# RFC 5322 §3.6's table: the fields a message may carry at most once.
ONCE = frozenset({"date", "from", "sender", "reply-to", "to", "cc", "bcc", "message-id",
                  "in-reply-to", "references", "subject"})
_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext: printable ASCII but ':'
SEND_AT_FIELD = "Outpost-Send-At"  # RFC 3339, as the API's send_at (api/scheduled.py header_send_at)
CONTROL = frozenset({SEND_AT_FIELD.lower()})  # Outpost's own fields: read, never sent


@dataclass(frozen=True)
class RawMessage:
    """A checked client message: its header fields (raw bytes, folded lines and CRLF
    included, in order), where its body starts, and what Outpost needs to know of it."""

    data: bytes
    fields: tuple[tuple[str, bytes], ...]  # (lowercase name, the field's raw lines)
    body_start: int  # offset of the body in `data` (after the empty line), or len(data)
    sender: Address  # the From mailbox
    from_header: str  # the From field's value, unfolded and decoded (for listings)
    subject: str  # decoded, unfolded, at most 200 characters (for listings)
    message_id: str | None  # the client's Message-ID value, stripped; None when it has none
    utf8_headers: bool  # the header section is not ASCII: it needs SMTPUTF8 (RFC 6532)
    send_at: str | None = None  # the Outpost-Send-At field's value (unchecked: header_send_at reads it)

    def finish(self, outpost_id: str, now: float) -> bytes:
        """The bytes to store and sign: Bcc and Outpost's control fields removed, Message-ID and
        Date added if missing (`now`: the acceptance, or the scheduled send time)."""
        names = {name for name, _ in self.fields}
        head = [raw for name, raw in self.fields if name != "bcc" and name not in CONTROL]
        if "message-id" not in names:
            head.append(f"Message-ID: {message_id_header(outpost_id, self.sender.ascii_domain)}\r\n".encode())
        if "date" not in names:
            head.append(f"Date: {formatdate(now, usegmt=True)}\r\n".encode())
        return b"".join(head) + b"\r\n" + memoryview(self.data)[self.body_start:]


def inspect_raw(data: bytes) -> RawMessage:
    """Check `data` (a message as received in DATA, CRLF line ends); see the module docstring."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise PayloadTooLargeError(f"the message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if bare_line_end(data):
        raise InvalidRequestError("the message has a bare CR or LF: every line must end with CRLF "
                                  "(RFC 5321 §2.3.8)", field="message")
    _check_lines(data)
    fields, body_start = _split_fields(data)
    counts: dict[str, int] = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    if counts.get(SEND_AT_FIELD.lower(), 0) > 1:
        raise InvalidRequestError(f"{SEND_AT_FIELD}: the field appears more than once", field=SEND_AT_FIELD)
    twice = sorted(n for n in ONCE if counts.get(n, 0) > 1)
    if twice and twice != ["from"]:
        raise InvalidRequestError(f"the {twice[0]!r} header field appears more than once "
                                  "(RFC 5322 §3.6)", field="message")
    if counts.get("from", 0) != 1:
        raise ForbiddenError("the message needs exactly one From header field", field="from")
    head = data[:body_start]
    raw_from = next(raw for name, raw in fields if name == "from")
    from_value = _value(raw_from)
    sender = _one_mailbox(from_value)
    raw_id = next((raw for name, raw in fields if name == "message-id"), None)
    message_id = _value(raw_id).strip() if raw_id is not None else None
    raw_subject = next((raw for name, raw in fields if name == "subject"), None)
    raw_send_at = next((raw for name, raw in fields if name == SEND_AT_FIELD.lower()), None)
    return RawMessage(data=data, fields=tuple(fields), body_start=body_start, sender=sender,
                      from_header=_decoded(from_value)[:998],
                      subject=_decoded(_value(raw_subject))[:200] if raw_subject is not None else "",
                      message_id=message_id or None, utf8_headers=not head.isascii(),
                      send_at=_value(raw_send_at) if raw_send_at is not None else None)


def bare_line_end(data: bytes) -> bool:
    """Whether `data` has a CR or an LF that is not part of a CRLF. SMTP smuggling (SEC Consult
    2023, CVE-2023-51766): a bare LF or CR is a line end to some MTAs and not to others, so
    LF "." LF or CR "." CR inside DATA could end the message, and start a second one, downstream;
    and the sender's transport writes any line end as CRLF, so a bare CR inside a header field
    becomes a new field (a second From) after the checks here. Refused, as Postfix's
    `smtpd_forbid_bare_newline` does. Three linear counts."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def _check_lines(data: bytes) -> None:
    """RFC 5322 §2.1.1: no line longer than 998 octets (CRLF excluded). A linear walk."""
    pos, n = 0, len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            end = n
        length = end - pos - (1 if end > pos and data[end - 1] == 0x0D else 0)
        if length > MAX_LINE:
            raise InvalidRequestError(f"a line is {length} octets long; RFC 5322 allows {MAX_LINE}",
                                      field="message")
        pos = end + 1


def _split_fields(data: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """The header fields (each with its continuation lines) and the body's offset."""
    fields: list[tuple[str, bytes]] = []
    pos, n = 0, len(data)
    while pos < n:
        if pos > MAX_HEADER_BYTES or len(fields) > MAX_FIELDS:
            raise InvalidRequestError(f"the header section is over {MAX_HEADER_BYTES} bytes or "
                                      f"{MAX_FIELDS} fields", field="message")
        end = data.find(b"\n", pos)
        end = n if end < 0 else end + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            return fields, end  # the empty line that ends the header section
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise InvalidRequestError("the message starts with a continuation line", field="message")
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            name_bytes, colon, _ = line.partition(b":")
            if not colon or not _NAME.fullmatch(name_bytes):
                raise InvalidRequestError("a header line is not 'name: value' (RFC 5322 §2.2); "
                                          "was the header section ended with an empty line?",
                                          field="message")
            fields.append((name_bytes.decode("ascii").lower(), line))
        pos = end
    return fields, n  # headers only, no body


def _value(raw: bytes) -> str:
    """A field's value, unfolded (RFC 5322 §2.2.3), as text (UTF-8 allowed, RFC 6532)."""
    value = raw.partition(b":")[2].decode("utf-8", "replace")
    return value.replace("\r\n", "").replace("\n", "").strip()


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded, for display only; the value itself on trouble."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _one_mailbox(value: str) -> Address:
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise ForbiddenError("the From header field must hold exactly one mailbox", field="from")
    try:
        return parse_address(pairs[0][1], allow_name=False)
    except AddressError as exc:
        raise ForbiddenError(f"the From address is invalid: {exc}", field="from") from None
