"""Parse one inbound bounce message into a BounceReport.

Order of evidence:
0. Amazon SES event notifications mailed by SNS (JSON, see ses.py).
1. RFC 5965 feedback reports (ARF), and Microsoft's JMRP complaints, are complaints, not
   bounces (reason "feedback").
2. RFC 3464 delivery-status fields (message/delivery-status, RFC 6533
   message/global-delivery-status, or the same fields under a wrong content type).
3. The human-readable text, through the family table (families.py / textscan.py); its
   last row is Sisimai's fallback body parser.  A report that names nobody falls back to
   the To: of the returned original.  A local delivery agent's own verdict
   ("mail.local: unknown user", families.MDA_AGENTS) and vendor wordings or codes
   (_vendor.py) refine the reason a status code gives.
4. RFC 3834 auto-replies (Auto-Submitted, vacation notices): not bounces (reason
   "vacation", kind "unknown"): they must never suppress anyone.

``parse_bounce`` never raises: whatever goes wrong, the answer is a report of kind "none",
and the failure is logged with its stack (``strict=True`` lets the caller count it instead).

Every input is bounded before it is scanned (limits.py): the bytes read, the MIME parts and
containers handed to the email package, each header, each part's text; and every pattern is
linear in what it scans (no whitespace run after ``^`` under re.M that crosses lines, no
quantified class that can restart at every position of a run).
"""

from __future__ import annotations

import email
import email.errors
import email.message
import email.policy
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from email.header import decode_header, make_header
from email.message import Message

from outpost.bounces._mime import headers_from_text, message_from_bytes
from outpost.bounces._prefilter import Prefiltered, needles
from outpost.bounces._vendor import OVERRIDABLE, host_reason, vendor_reason
from outpost.bounces.classify import (
    classify,
    command_from_text,
    reply_code_from_text,
    status_from_text,
)
from outpost.bounces.families import FAMILIES, MDA_AGENTS, POWERMTA_CATEGORY, Family
from outpost.bounces.limits import (
    BODY_SCAN_LIMIT,
    DIAGNOSTIC_LIMIT,
    HEADER_SIZE_LIMIT,
    MESSAGE_LINE_LIMIT,
    MESSAGE_READ_LIMIT,
    MIME_NESTING_LIMIT,
    MIME_PART_LIMIT,
    REPORT_RECIPIENT_LIMIT,
    TEXT_SCAN_LIMIT,
)
from outpost.bounces.report import NOT_A_BOUNCE, BounceRecipient, BounceReport
from outpost.bounces.textscan import (
    TextHit,
    cut_original,
    diagnostic_for,
    families_detected,
    row_enabled,
    scan_text,
)

__all__ = ["parse_bounce"]

log = logging.getLogger("outpost.bounces")

# An address: a run of local-part characters, "@", a domain.  The lookbehind lets a match
# start only where a run starts: without it a run of 100,000 local-part characters with no
# "@" is rescanned from each of its positions (quadratic: 86 s for a 120 KB To: header).
_LOCAL = r"[^\s<>()\[\]\"',;:]"
_ADDR_RE = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@[A-Za-z0-9.\-\[\]:]+[A-Za-z0-9\]]")
_QUOTED_ADDR_RE = re.compile(r'("(?:[^"\\\r\n]|\\.)+")@([A-Za-z0-9.\-]+[A-Za-z0-9]|\[[0-9A-Fa-f.:]+\])')
_FIELD_RE = re.compile(
    r"^(Reporting-MTA|Original-Envelope-Id|Arrival-Date|Received-From-MTA|X-Postfix-Sender"
    r"|Final-Recipient|Original-Recipient|X-Actual-Recipient|Action|Status|Remote-MTA"
    r"|Diagnostic-Code|Last-Attempt-Date|Will-Retry-Until|X-Postfix-Queue-ID"
    r"|X-PowerMTA-BounceCategory)\s*:\s?(.*)$",
    re.I | re.M,
)
# _FIELD_RE on one line, as _fields() finds it in a whole text: "\s" may not cross a line.
_FIELD_NAMES = _FIELD_RE.pattern[1:_FIELD_RE.pattern.index(")") + 1]
_FIELD_AT = re.compile(_FIELD_NAMES + r"[^\S\n]*:[^\S\n]?(.*)", re.I)
_FIELD_AFTER_LF = re.compile("\n" + _FIELD_NAMES + r"[^\S\n]*:[^\S\n]?(.*)", re.I)
_STATUS_CODE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_PER_RECIPIENT = frozenset(
    {"final-recipient", "original-recipient", "x-actual-recipient", "action", "status",
     "remote-mta", "diagnostic-code", "last-attempt-date", "will-retry-until",
     "x-powermta-bouncecategory"}
)
_DS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ORIG_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers",
     "message/partial", "message/rfc822-headers"}
)
_WS = re.compile(r"\s+")
# A tag cannot contain "<": with "[^>]+" a run of "<" was rescanned from each "<" (200 KB
# of "<" in a text/html part never finished).
_TAGS = re.compile(r"<[^<>]+>")
_NOT_BOUNCE_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
# RFC 3834 section 5 and the common vendor headers for auto-replies.
_AUTOREPLY_HEADERS = (
    ("auto-submitted", re.compile(r"^auto-(?:generated|replied|notified)", re.I)),
    ("x-auto-response-suppress", re.compile(r"oof|autoreply", re.I)),
    ("x-apple-action", re.compile(r"^vacation$", re.I)),
    ("precedence", re.compile(r"^auto_reply$", re.I)),
    ("x-autoreply", re.compile(r".")),
    ("x-autorespond", re.compile(r".")),
    ("subject", re.compile(
        r"^(?:auto:|auto[ ]response:|automatic[ ]reply:|out[ ]of[ ](?:the[ ])*office:"
        r"|auto(?:matic)?[- ]?reply\b|abwesenheitsnotiz|r[ée]ponse automatique)", re.I)),
)
# Bounces from these senders are never auto-replies even with an Auto-Submitted header.
_PROBE_HEADERS = ("X-SES-Outgoing", "X-Mailer", "X-Failed-Recipients")
_DAEMON_FROM = re.compile(r"(?:mailer-daemon|postmaster|mail delivery|root)@?", re.I)
_DAEMON_SUBJECT = re.compile(r"mail failure -|security information for", re.I)


_message_from_bytes = message_from_bytes
_DELIMITER_LINE = re.compile(rb"^--", re.M)
# "Content-Type: multipart/..." or "message/...", possibly folded after the colon.
_CONTAINER_LINE = re.compile(rb"^content-type:[ \t]*(?:\n[ \t]+)?(?:multipart|message)/",
                             re.I | re.M)


def _bound_mime(data: bytes) -> bytes:
    """``data`` cut after MESSAGE_LINE_LIMIT lines, and before the line that opens part
    MIME_PART_LIMIT + 1 or container MIME_NESTING_LIMIT + 1 (counted over the whole message,
    which bounds the depth too: each level of nesting needs a container), so that the email
    package parses a bounded tree."""
    cut = len(data)
    if len(data) >= MESSAGE_LINE_LIMIT and data.count(b"\n") >= MESSAGE_LINE_LIMIT:
        lines = data.split(b"\n", MESSAGE_LINE_LIMIT)
        cut = len(data) - len(lines[-1])
        del lines
    # Literal counts bound the number of matches from above (one C pass each): most
    # messages are far below both limits, and the line-anchored scans are skipped.  Every
    # container line has a "/": the case-blind count of the types is needed only when
    # there are more slashes than the limit.
    containers = data.count(b"/", 0, cut)
    if containers > MIME_NESTING_LIMIT:
        low = data[:cut].lower()
        containers = low.count(b"multipart/") + low.count(b"message/")
    checks = (
        (_DELIMITER_LINE, MIME_PART_LIMIT, data.count(b"\n--", 0, cut) + data.startswith(b"--")),
        (_CONTAINER_LINE, MIME_NESTING_LIMIT, containers),
    )
    for rx, limit, most in checks:
        if most <= limit:
            continue
        for i, m in enumerate(rx.finditer(data, 0, cut)):
            if i == limit:
                cut = m.start()
                break
    return data[:cut]


def _decode_header(value: object) -> str:
    if isinstance(value, str) and "=?" not in value:
        # No RFC 2047 encoded-words: nothing to decode (the common case), only the cut.
        return value[:HEADER_SIZE_LIMIT]
    if value is None:
        return ""
    if len(str(value)) > HEADER_SIZE_LIMIT:
        value = str(value)[:HEADER_SIZE_LIMIT]
    if isinstance(value, str) and "=?" not in value:
        return value  # no RFC 2047 encoded-words: nothing to decode (the common case)
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:
        return str(value)


def _normalize(raw: bytes) -> bytes:
    # CRLF, LF and bare CR line endings all become LF (the corpus has all three).
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # mbox framing: a leading "From " line is not a header.
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        raw = raw[nl + 1 :] if nl >= 0 else b""
    return raw.lstrip(b"\n")


def _part_text(part: Message) -> str:
    """The decoded text of a leaf part (charset and transfer encoding applied)."""
    payload = part.get_payload(decode=True)
    if payload is None:
        inner = part.get_payload()
        if isinstance(inner, list):
            return "\n\n".join(_msg_text(p) for p in inner if isinstance(p, Message))
        return str(inner or "")
    if not isinstance(payload, bytes):
        return str(payload)
    payload = payload[:BODY_SCAN_LIMIT]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # unknown charset; ValueError: a NUL in its name
        text = payload.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _report_text(part: Message) -> str:
    """Text of a message/delivery-status-like part.  The email package parses these into
    sub-messages with 8-bit bytes smuggled as surrogates; RFC 6533 fields are UTF-8, so
    re-serialise the bytes and decode them as UTF-8."""
    inner = part.get_payload()
    if not isinstance(inner, list):
        return _part_text(part)
    chunks: list[str] = []
    total = 0
    for sub in inner:
        if not isinstance(sub, Message):
            continue
        if total > BODY_SCAN_LIMIT:
            break
        # Header lines as received (compat32 keeps folds and smuggles 8-bit octets as
        # surrogates; they go back to bytes and are read as UTF-8).  Cheaper than as_bytes(),
        # which re-folds every header.
        head = "\n".join(f"{k}: {v}" for k, v in sub.raw_items())
        head = head.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        body = sub.get_payload(decode=True) if not sub.is_multipart() else None
        if isinstance(body, bytes) and body:
            head += "\n\n" + body.decode("utf-8", "replace")
        chunks.append(head)
        total += len(head) + 2
    return "\n\n".join(chunks)


def _msg_text(msg: Message) -> str:
    """Header block + body of a sub-message (used for message/delivery-status blocks)."""
    head = "\n".join(f"{k}: {v}" for k, v in msg.items())
    body = msg.get_payload()
    if isinstance(body, list):
        return head + "\n\n" + "\n\n".join(_msg_text(p) for p in body if isinstance(p, Message))
    return head + ("\n\n" + str(body) if body else "")


def _clean_addr(value: str) -> str:
    """'rfc822; <User@Example.COM>' -> 'User@example.com' (Sisimai lowercases the domain)."""
    v = value.strip()
    if ";" in v:
        v = v.split(";", 1)[1]
    q = _QUOTED_ADDR_RE.search(v)
    if q:
        # A quoted local part ("john..doe"@example.com, RFC 5321 section 4.1.2) keeps its
        # quotes: without them it is not the same address.
        return f"{q.group(1)}@{q.group(2).lower()}"
    m = _ADDR_RE.search(v)
    if not m:
        return ""
    addr = m.group(0).strip(".<>'\"")
    local, _, domain = addr.rpartition("@")
    if not local or not domain:
        return ""
    return f"{local}@{domain.lower()}"


def _fields(text: str) -> list[tuple[str, str]]:
    """RFC 3464 fields (with folded continuation lines) in order of appearance: each line
    that _FIELD_RE matches, found at the start of the text or after a line break (the "\n"
    that _FIELD_AFTER_LF starts with is a literal the regex engine skips to); a
    continuation line starts with a blank, so it never starts a field itself."""
    out: list[tuple[str, str]] = []
    n = len(text)
    m = _FIELD_AT.match(text) or _FIELD_AFTER_LF.search(text)
    while m is not None:
        name, value = m.group(1).lower(), m.group(2).strip()
        end = m.end()  # the end of the field's line: its "\n", or the end of the text
        while end < n:
            nl = text.find("\n", end + 1)
            stop = n if nl < 0 else nl
            line = text[end + 1:stop]
            if line[:1] not in (" ", "\t") or not line.strip():
                break
            value += " " + line.strip()
            end = stop
        out.append((name, value))
        m = _FIELD_AFTER_LF.search(text, end)
    return out


class _Rcpt:
    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}


def _group_recipients(fields: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[_Rcpt]]:
    """Split fields into per-message ones and per-recipient groups.

    RFC 3464 separates recipient blocks with blank lines; real reports often do not, so
    a new recipient starts whenever a per-recipient field repeats, or an
    Original-Recipient / Final-Recipient follows a completed Final-Recipient.
    """
    msg: dict[str, str] = {}
    rcpts: list[_Rcpt] = []
    cur: _Rcpt | None = None
    for name, value in fields:
        if name not in _PER_RECIPIENT:
            msg.setdefault(name, value)
            continue
        new = cur is None or name in cur.fields
        if (cur is not None and name == "original-recipient"
                and "final-recipient" in cur.fields and "status" in cur.fields):
            # The previous entry is complete (it has an address and a verdict); an
            # Original-Recipient after a verdict-only block (Action, Status first, as Sun's
            # Messaging Server writes them) still belongs to it.
            new = True
        if new:
            cur = _Rcpt()
            rcpts.append(cur)
        assert cur is not None
        cur.fields[name] = value
    return msg, [r for r in rcpts if "final-recipient" in r.fields
                 or "original-recipient" in r.fields]


def _diag_type_and_text(value: str) -> tuple[str, str]:
    """'smtp; 550 5.1.1 ...' -> ('SMTP', '550 5.1.1 ...') (RFC 3464 section 2.3.6)."""
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9\-]*)\s*;\s*(.*)$", value, re.S)
    if m:
        return m.group(1).upper(), _WS.sub(" ", m.group(2)).strip()
    return "SMTP", _WS.sub(" ", value).strip()


def _status_field(value: str) -> str | None:
    m = _STATUS_CODE.search(value or "")
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def _final_status(status: str | None, diagnostic: str) -> str | None:
    """The RFC 3463 code to report: a specific code in the reply text is more precise than
    a generic Status field (many MTAs put 5.0.0 there); no field -> the text's code."""
    found = status_from_text(diagnostic) if diagnostic else None
    if status and status[1:] == ".4.7":
        # X.4.7 "delivery time expired" is the reporting MTA's own verdict (Sendmail's
        # queue return); the diagnostic is only the last attempt's reply (RFC 3463 §3.5).
        return status
    if found and not found.endswith(".0.0"):
        if not status or status[0] == found[0]:
            return found
        # A generic Status of the other class: the text's code refines it only when the
        # classes agree. Exim's expiry bounce says "Status: 5.0.0" beside the last 451 4.3.0
        # reply: the message failed for good, so 4.3.0 would contradict Action: failed.
        if status.endswith(".0.0") and not (status[0] == "5" and found[0] == "4"):
            return found
    if status:
        return status
    return found


def _recipient(address: str, status: str | None, diagnostic: str, action: str | None,
               *, diag_type: str = "SMTP", remote_mta: str | None = None,
               original: str | None = None, last_attempt: str | None = None,
               hint: str | None = None, command: str | None = None) -> BounceRecipient:
    diagnostic = diagnostic[:DIAGNOSTIC_LIMIT].strip()
    family_hint = hint
    if diagnostic:
        hint = vendor_reason(diagnostic) or hint
    status = _final_status(status, diagnostic)
    reply = reply_code_from_text(diagnostic) if diagnostic else None
    if reply is not None and status and str(reply)[0] != status[0]:
        reply = None
    if command is None and diagnostic:
        command = command_from_text(diagnostic)
    # A provider's reply read by what its host documents (Sisimai's Rhost step: the remote
    # MTA, else the recipient's domain, names the provider).  Where no family said more, it
    # decides over the generic phrases: "550 Unknown user" at DATA is DOCOMO's filter.
    provider = (host_reason(remote_mta, status, diagnostic, command)
                or host_reason(address.rpartition("@")[2], status, diagnostic, command)
                ) if diagnostic and not family_hint else None
    kind, reason = classify(status, diagnostic or None, action, reply, command=command,
                            diagnostic_type=diag_type)
    if provider or (hint and reason in OVERRIDABLE):
        from outpost.bounces.classify import kind_for_reason

        reason = provider or hint or reason
        kind = kind_for_reason(reason, status, reply)
    if action is None and status:
        action = "delayed" if reason == "expired" and status.startswith("4") else "failed"
    return BounceRecipient(
        address=address, action=action, status=status, kind=kind, reason=reason,
        diagnostic=diagnostic or None, reply_code=reply, remote_mta=remote_mta,
        original_recipient=original, last_attempt=last_attempt,
    )


def _original_headers(part: Message) -> tuple[tuple[str, str], ...]:
    ctype = part.get_content_type()
    if ctype in ("text/rfc822-headers", "message/global-headers", "message/rfc822-headers") or (
        not part.is_multipart() and not isinstance(part.get_payload(), list)
    ):
        text = _part_text(part)
        inner = headers_from_text(text.lstrip("\n"))
        return tuple((k, _decode_header(v)) for k, v in inner.items())
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return tuple((k, _decode_header(v)) for k, v in payload[0].items())
    return ()


_INLINE_ORIG = re.compile(
    r"^(?:Return-Path|Received|From|To|Subject|Date|Message-I[Dd]):[^\n]*\n"
    r"(?:(?:[A-Za-z][A-Za-z0-9\-]*:[^\n]*|[ \t][^\n]*)\n)+",
    re.M,
)
_INLINE_ORIG_AFTER_LF = re.compile("\n" + _INLINE_ORIG.pattern[1:], re.M)


def _inline_original(text: str) -> tuple[tuple[str, str], ...]:
    """Headers of an original message quoted inline in a text bounce."""

    cut = len(cut_original(text))
    if cut >= len(text):
        return ()
    # _INLINE_ORIG.search(text, cut): a match at ``cut``, or one after a line break (the
    # "\n" it starts with is a literal the regex engine skips to; "^" is tried everywhere).
    m = _INLINE_ORIG.match(text, cut)
    if m is not None:
        start, block = cut, m.group(0)
    else:
        m = _INLINE_ORIG_AFTER_LF.search(text, cut)
        if m is None:
            return ()
        start, block = m.start() + 1, m.group(0)[1:]
    if start - cut > 400:
        return ()
    inner = headers_from_text(block)
    return tuple((k, _decode_header(v)) for k, v in inner.items())


def _message_id(headers: Iterable[tuple[str, str]]) -> str | None:
    for k, v in headers:
        if k.lower() == "message-id":
            m = re.search(r"<([^<>\s]+)>", v)
            return m.group(1) if m else (v.strip() or None)
    return None


_TO_ADDRESSES = 50  # addresses of the To:-like headers kept (each is checked for our token)


def _to_addresses(msg: Message) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for h in ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to"):
        for v in msg.get_all(h) or []:
            for m in _ADDR_RE.finditer(_decode_header(v)):
                out.setdefault(m.group(0).strip(".<>'\""))
                if len(out) >= _TO_ADDRESSES:
                    return tuple(out)
    return tuple(out)


def _is_autoreply(msg: Message, subject: str, sender: str) -> bool:
    if _DAEMON_FROM.search(sender) or _DAEMON_SUBJECT.search(subject):
        return False
    for name, rx in _AUTOREPLY_HEADERS:
        value = subject if name == "subject" else msg.get(name)
        if value and rx.search(str(value).strip()):
            return True
    return False


_BOUNDARY_LINE = re.compile(rb"^--([^\s\"]{6,70}?)(--)?[ \t]*$", re.M)


def _repair_boundary(data: bytes, msg: Message) -> Message:
    """A multipart whose declared boundary never occurs in the body (the header was
    rewritten after the body was built, as some relays and list managers do): use the
    delimiter the body really has (RFC 2046 section 5.1.1: "--" boundary on its own line,
    seen at least twice or closed with a trailing "--")."""
    old = msg.get_boundary()
    end = data.find(b"\n\n")
    if not old or end < 0:
        return msg
    seen: dict[bytes, int] = {}
    for m in _BOUNDARY_LINE.finditer(data, end):
        b = m.group(1)
        seen[b] = seen.get(b, 0) + (2 if m.group(2) else 1)
        if seen[b] >= 2:
            head = data[:end].replace(old.encode("utf-8", "replace"), b, 1)
            fixed = _message_from_bytes(head + data[end:])
            return fixed if fixed.is_multipart() and fixed.get_payload() else msg
    return msg


def parse_bounce(raw: bytes, *, strict: bool = False) -> BounceReport:
    """Parse one message (RFC 5322 bytes); only its first MESSAGE_READ_LIMIT bytes are read.

    Unreadable input -> kind "none".  A failure of the parser itself is a bug: it is logged
    with its stack and the answer is kind "none" (the bounce processor must go on), unless
    ``strict``, when it is raised for the caller to record and count."""
    try:
        return _parse(raw)
    except Exception:
        if strict:
            raise
        log.exception("bounce parser failed", extra={"size": len(raw)})
        return NOT_A_BOUNCE


def _parse(raw: bytes) -> BounceReport:
    """The steps in order of evidence (module docstring): each returns a report, or None
    when its kind of evidence is absent and the next step is to look."""
    msg = _read_message(raw)
    if msg is None:
        return NOT_A_BOUNCE
    return _parse_message(msg)


def _parse_message(msg: Message, *, nested: bool = False) -> BounceReport:
    b = _sort_parts(msg)
    return (_from_ses(b) or _from_feedback(b) or _from_report(b) or _from_autoreply(b)
            or _from_text(b) or _from_failed_header(b) or _from_lost_report(b)
            or (None if nested else _from_forwarded(b)) or replace(b.base, kind="none"))


def _from_forwarded(b: _Bounce) -> BounceReport | None:
    """A report that names nobody outside its attachment, whose attached message is itself
    a delivery report (some relays forward the DSN they received as message/rfc822, as
    Sisimai::Lhost::X5 describes): that report, read once (no deeper)."""
    for part in b.msg.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if not (isinstance(inner, list) and inner and isinstance(inner[0], Message)):
            return None
        if not any(p.get_content_type() in _DS_TYPES for p in inner[0].walk()):
            return None
        report = _parse_message(inner[0], nested=True)
        return report if report.kind == "dsn" else None
    return None


def _read_message(raw: bytes) -> Message | None:
    """``raw`` bounded (limits.py), normalised and parsed; None for no input."""
    if not raw:
        return None
    if len(raw) > MESSAGE_READ_LIMIT:
        # A cut message: its last line is cut too; without it the rest still parses (an
        # unclosed multipart is a defect the email package tolerates).
        raw = raw[:MESSAGE_READ_LIMIT]
        raw = raw[:raw.rfind(b"\n") + 1] or raw
    data = _bound_mime(_normalize(raw))
    msg = _message_from_bytes(data)
    if msg.defects and any(
            isinstance(d, email.errors.StartBoundaryNotFoundDefect) for d in msg.defects):
        msg = _repair_boundary(data, msg)
    return msg


@dataclass(frozen=True)
class _Bounce:
    """One inbound message with its parts sorted by role: what every step reads."""

    msg: Message
    subject: str
    sender: str
    text: str  # the human-readable parts (HTML only when there is no text), bounded
    ds_texts: tuple[str, ...]  # message/delivery-status parts
    feedback: tuple[str, ...]  # message/feedback-report parts
    base: BounceReport  # kind "none", with what every answer carries (original headers...)
    probe: str  # headers and start of body that family rows detect on

    @property
    def before_original(self) -> str:
        return cut_original(self.text)


def _sort_parts(msg: Message) -> _Bounce:
    subject = _decode_header(msg.get("subject"))
    sender = _decode_header(msg.get("from"))
    ds_texts: list[str] = []
    human: list[str] = []
    html: list[str] = []
    feedback: list[str] = []
    orig_headers: tuple[tuple[str, str], ...] = ()
    skip: set[int] = set()
    for part in msg.walk():
        if id(part) in skip:
            continue
        ctype = part.get_content_type()
        if ctype in _ORIG_TYPES or ctype in _DS_TYPES or ctype == "message/feedback-report":
            if ctype in _ORIG_TYPES:
                orig_headers = orig_headers or _original_headers(part)
            else:
                (ds_texts if ctype in _DS_TYPES else feedback).append(_report_text(part))
            skip.update(id(sub) for sub in part.walk() if sub is not part)
            continue
        if part.is_multipart():
            continue
        if ctype == "text/html":
            html.append(_TAGS.sub(" ", _part_text(part)))
        elif (ctype.startswith(("text/", "multipart/", "message/")) or not ctype):
            # (a multipart whose boundary never occurs is a leaf)
            human.append(_part_text(part))
    text = ("\n\n".join(human) if human else "\n\n".join(html))[:TEXT_SCAN_LIMIT]
    orig_headers = orig_headers or _inline_original(text)
    base = BounceReport(
        kind="none", recipients=(), original_headers=orig_headers,
        original_message_id=_message_id(orig_headers), to_addresses=_to_addresses(msg),
    )
    return_path = _decode_header(msg.get("return-path"))
    # Header lines some family rows key on (the MTA's own fingerprint headers).
    marks = "".join(f"{h}: {msg.get(h)}\n" for h in _PROBE_HEADERS if msg.get(h) is not None)
    probe = (f"From: {sender}\nSubject: {subject}\nReturn-Path: {return_path}\n{marks}"
             f"{text[:4000]}")
    return _Bounce(msg, subject, sender, text, tuple(ds_texts), tuple(feedback), base, probe)


def _from_ses(b: _Bounce) -> BounceReport | None:
    """0. Amazon SES notifications mailed by SNS: JSON, not MIME reports."""
    return _ses(b.text, b.base) if b.text.lstrip().startswith("{") else None


def _from_feedback(b: _Bounce) -> BounceReport | None:
    """1. RFC 5965 feedback report (or Microsoft JMRP): the complained-about recipient."""
    if (b.feedback or "feedback-report" in str(b.msg.get("content-type") or "").lower()
            or (_JMRP_FROM.search(b.sender) and _JMRP_SUBJECT.search(b.subject))):
        return _feedback(list(b.feedback), b.text, b.base.original_headers, b.base)
    return None


def _from_report(b: _Bounce) -> BounceReport | None:
    """2. RFC 3464 fields: in the delivery-status part, or (wrong content type) anywhere in
    the human-readable text before the original message."""
    fields = [fv for t in b.ds_texts for fv in _fields(t)]
    for n, _ in fields:
        if n == "final-recipient" or n == "original-recipient":
            break
    else:
        fields = _fields(b.before_original)
    msg_fields, rcpts = _group_recipients(fields)
    rcpts = rcpts[:REPORT_RECIPIENT_LIMIT]
    if not rcpts or not any(("status" in r.fields or "action" in r.fields) for r in rcpts):
        return None
    evidence = _text_evidence(b, rcpts)
    recipients: list[BounceRecipient] = []
    seen: set[str] = set()
    for r in rcpts:
        entry = _report_entry(r.fields, evidence, b.text)
        if entry is not None and entry.address.lower() not in seen:
            seen.add(entry.address.lower())
            recipients.append(entry)
    if not recipients:
        return replace(b.base, kind="none", recipients=(), family="rfc3464")
    return replace(
        b.base, kind="dsn", recipients=tuple(recipients), family="rfc3464",
        reporting_mta=_after_semicolon(msg_fields.get("reporting-mta")),
        envelope_id=msg_fields.get("original-envelope-id") or None,
        arrival_date=msg_fields.get("arrival-date") or None,
    )


@dataclass(frozen=True)
class _TextEvidence:
    """What the human-readable part adds to an RFC 3464 report's entries."""

    hits: dict[str, TextHit]  # by lower-case address: the text's explanation
    hints: dict[str, str | None]  # by lower-case address: the family row's reason
    detected: Family | None  # the family that wrote the report (its phrases still apply)
    prefer_original: bool  # its Final-Recipient names an internal mailbox
    mda: str | None  # a local delivery agent's verdict (families.MDA_AGENTS)
    before_original: str


def _text_evidence(b: _Bounce, rcpts: list[_Rcpt]) -> _TextEvidence:
    # The human-readable part is read only when some entry has no Diagnostic-Code (it then
    # supplies the explanation); otherwise the report says it all.
    fam: Family | None = None
    hits: list[TextHit] = []
    if not all(r.fields.get("diagnostic-code", "").strip() for r in rcpts):
        fam, hits = scan_text(b.probe, b.text)
    found = families_detected(b.probe)
    before = b.before_original
    return _TextEvidence(
        hits={h.address.lower(): h for h in hits},
        hints={h.address.lower(): _family_hint(fam, h.diagnostic) for h in hits},
        detected=fam or next((f for f in found if f.reasons), None),
        prefer_original=any(f.prefer_original for f in found),
        mda=_mda_verdict(b.sender, before), before_original=before,
    )


def _report_entry(f: dict[str, str], ev: _TextEvidence, text: str) -> BounceRecipient | None:
    """One RFC 3464 per-recipient block as a recipient, or None (no address, or a success
    notice: delivered, relayed, expanded)."""
    addr = _clean_addr(f.get("final-recipient", ""))
    orig = _clean_addr(f.get("original-recipient", ""))
    if orig and (not addr or ev.prefer_original or _internal_name_of(addr, orig)):
        # e.g. "user@ims-ms-daemon": an internal mailbox name, not an address anyone sent
        # to; the Original-Recipient is the one the sender knows.
        addr = orig
    action = (f.get("action") or "").strip().lower().split(" ")[0] or None
    status = _status_field(f.get("status", ""))
    if not addr or action in _NOT_BOUNCE_ACTIONS or (status or "").startswith("2."):
        return None
    key = addr.lower()
    hit = ev.hits[key].diagnostic if key in ev.hits else None
    diag_type, diag = _diag_type_and_text(f.get("diagnostic-code", ""))
    if not diag:
        diag = hit or diagnostic_for(addr, text)
        raw_status = f.get("status", "").strip()
        if not diag and raw_status and not _STATUS_CODE.fullmatch(raw_status):
            diag = raw_status
    if diag_type == "X-POSTFIX":
        diag_type = "SMTP"  # Postfix's own verdicts (e.g. "unknown user") read like replies
    command = command_from_text(diag)
    if command is None:
        # Postfix says which command the reply answered only in its text part ("... (in
        # reply to RCPT TO command)").
        command = command_from_text(hit) if hit else (
            None if ev.hits else _command_near(addr, ev.before_original))
    powermta = (POWERMTA_CATEGORY.get(f.get("x-powermta-bouncecategory", "").strip())
                if row_enabled("powermta") else None)
    hint = (ev.mda or powermta or ev.hints.get(key)
            or (_family_hint(ev.detected, diag) if ev.detected is not None else None))
    return _recipient(
        addr, status, diag, action, diag_type=diag_type,
        remote_mta=_after_semicolon(f.get("remote-mta")), original=orig or None,
        last_attempt=f.get("last-attempt-date") or None, hint=hint, command=command,
    )


def _from_autoreply(b: _Bounce) -> BounceReport | None:
    """4. RFC 3834 auto-replies (checked before the text scan: a vacation notice reads like
    a bounce sometimes): reason "vacation", never a suppression."""
    if not _is_autoreply(b.msg, b.subject, b.sender):
        return None
    addr = _clean_addr(b.sender) or _clean_addr(_decode_header(b.msg.get("return-path")))
    if not addr:
        return replace(b.base, kind="autoreply", recipients=(), family="rfc3834")
    body = _WS.sub(" ", b.before_original)[:300].strip()
    rcpt = BounceRecipient(address=addr, action=None, status=None, kind="unknown",
                           reason="vacation", diagnostic=body or b.subject or None)
    return replace(b.base, kind="autoreply", recipients=(rcpt,), family="rfc3834")


def _from_text(b: _Bounce) -> BounceReport | None:
    """3. The human-readable text through the family table (its last rows: the generic
    layer)."""
    # The bouncer (From) and the bounce's own recipient (To: the original's sender) are
    # never the failed recipient, whatever line of the text names them.
    exclude = frozenset(a.lower() for a in (*_addresses_in(b.sender),
                                            *_addresses_in(_decode_header(b.msg.get("to")))))
    fam, hits = scan_text(b.probe, b.text, exclude)
    # A text bounce says whether it is final or a warning only in words (RFC 3464's
    # Action field is what it lacks): warnings mean "delayed", anything else "failed".
    warning = _DELAY_WORDS.search(f"{b.subject}\n{b.before_original[:3000]}")
    action = "delayed" if warning else "failed"
    mda = _mda_verdict(b.sender, b.before_original)
    recipients: list[BounceRecipient] = []
    for h in hits[:REPORT_RECIPIENT_LIMIT]:
        addr = _clean_addr(h.address)
        if addr:
            hint = mda or _family_hint(fam, h.diagnostic)
            recipients.append(_recipient(addr, None, h.diagnostic, action, hint=hint))
    if not recipients:
        return None
    return replace(b.base, kind="dsn", recipients=tuple(recipients),
                   family=fam.name if fam is not None else None)


def _from_failed_header(b: _Bounce) -> BounceReport | None:
    """A bounce whose text names nobody in a shape we know, but whose MTA lists the failed
    recipients in an X-Failed-Recipients header (Exim, Google's mailers): those, each with
    the text before the original as its diagnostic."""
    value = _decode_header(b.msg.get("x-failed-recipients"))
    addrs = list(dict.fromkeys(_clean_addr(a) for a in _addresses_in(value)))
    addrs = [a for a in addrs if a][:REPORT_RECIPIENT_LIMIT]
    if not addrs or not _DAEMON_FROM.search(b.sender):
        return None
    diag = _WS.sub(" ", b.before_original).strip()[:DIAGNOSTIC_LIMIT]
    warning = _DELAY_WORDS.search(f"{b.subject}\n{b.before_original[:3000]}")
    action = "delayed" if warning else "failed"
    return replace(b.base, kind="dsn", recipients=tuple(
        _recipient(a, None, diag, action) for a in addrs), family="generic")


def _from_lost_report(b: _Bounce) -> BounceReport | None:
    """A delivery-status report that names nobody (Postfix writes one when the
    per-recipient records are lost: "Delivery report unavailable"): the To: of the returned
    original is the only recipient evidence left (Sisimai does the same)."""
    if not b.ds_texts:
        return None
    tos = [a for k, v in b.base.original_headers if k.lower() == "to"
           for a in _addresses_in(v)]
    if len(tos) != 1 or not _clean_addr(tos[0]):
        return None
    diag = _WS.sub(" ", b.before_original).strip()[:500]
    rcpt = _recipient(_clean_addr(tos[0]), None, "", "failed")
    return replace(b.base, kind="dsn", recipients=(replace(rcpt, diagnostic=diag or None),),
                   family="rfc3464")


_DELAY_WORDS = Prefiltered(re.compile(
    r"\bdelayed\b|has not yet been delivered|not been delivered yet|still being retried"
    r"|will (?:continue|keep) (?:trying|to try)|Delivery Status Notification \(Delay\)"
    r"|^Subject: Warning|this is a warning message only|will retry", re.I | re.M))


_MDA_FROM = re.compile(r"^\W*(?:mail delivery subsystem|mailer-daemon|postmaster)", re.I)


def _mda_verdict(sender: str, text: str) -> str | None:
    """The reason a local delivery agent gave in the bounce text (families.MDA_AGENTS):
    the paragraph from the agent's line to the next blank line is read."""
    if not row_enabled("mda") or not _MDA_FROM.search(sender) or not any(
            k in text for k in ("mail.local: ", "procmail: ", "maildrop: ", "vdeliver",
                                "automatically rejected:")):
        return None
    for _name, intro, reasons in MDA_AGENTS:
        m = intro.search(text)
        if not m:
            continue
        end = text.find("\n\n", m.start())
        para = text[m.start():end if end >= 0 else len(text)].lower()
        for reason, phrases in reasons:
            if any(p in para for p in phrases):
                return reason
        return None
    return None


def _command_near(addr: str, text: str) -> str | None:
    """The SMTP command named in a paragraph of ``text`` that mentions ``addr`` (Postfix's
    "(in reply to RCPT TO command)", a Sendmail transcript's ">>> RCPT TO:<addr>")."""
    low = text.lower()
    needle = addr.lower()
    i = low.find(needle)
    # Bounded: the first _NEAR_MENTIONS mentions, _NEAR_CHARS either side of each (a text
    # that repeats the address on every line had each paragraph rescanned per mention).
    for _ in range(_NEAR_MENTIONS):
        if i < 0:
            break
        lo = max(0, i - _NEAR_CHARS)
        start = low.rfind("\n\n", lo, i)
        start = lo if start < 0 else start + 1
        hi = min(len(low), i + len(needle) + _NEAR_CHARS)
        end = low.find("\n\n", i, hi)
        cmd = command_from_text(text[start:end if end >= 0 else hi])
        if cmd:
            return cmd
        i = low.find(needle, max(i + len(needle), end if end >= 0 else hi))
    return None


_NEAR_MENTIONS = 20
_NEAR_CHARS = 4000


def _internal_name_of(final: str, original: str) -> bool:
    """Is ``final`` the reporting MTA's internal name for ``original``'s mailbox: the same
    local part at an unqualified host ("userx@sims-ms-daemon" for "userx@example.com")?
    Then the Original-Recipient is what the sender wrote (RFC 3464 section 2.3.1).  An
    alias expanded to another local part keeps its Final-Recipient."""
    f_local, _, f_domain = final.rpartition("@")
    return "." not in f_domain and f_local.lower() == original.rpartition("@")[0].lower()


def _family_hint(fam: object, diagnostic: str) -> str | None:
    reasons = getattr(fam, "reasons", ())
    text = diagnostic or ""
    # A row's pattern runs only if one of its literals occurs (_prefilter.needles), checked
    # on ASCII text, where str.lower() and re.I agree.
    low = text.lower() if reasons and text.isascii() else None
    for rx, reason in reasons:
        gate = _REASON_NEEDLES.get(rx)
        if gate is not None and low is not None:
            for n in gate:
                if n in low:
                    break
            else:
                continue
        if rx.search(text):
            return str(reason)
    return None


_REASON_NEEDLES = {rx: needles(rx) for f in FAMILIES for rx, _ in f.reasons if rx.flags & re.I}


def _addresses_in(value: str) -> list[str]:
    return [a.strip(".<>'\"") for a in _ADDR_RE.findall(value or "")]


def _after_semicolon(value: str | None) -> str | None:
    if not value:
        return None
    v = value.split(";", 1)[1] if ";" in value else value
    return v.strip().strip("[]") or None


def _ses(text: str, base: BounceReport) -> BounceReport | None:
    from outpost.bounces.ses import ses_entries, ses_message_id, ses_payload

    payload = ses_payload(text)
    if payload is None:
        return None
    kind, entries = ses_entries(payload)
    base = replace(base, original_message_id=ses_message_id(payload) or base.original_message_id)
    rcpts: list[BounceRecipient] = []
    for e in entries:
        addr = _clean_addr(e["address"])
        if not addr:
            continue
        if kind == "feedback":
            rcpts.append(BounceRecipient(address=addr, action=None, status=None, kind="unknown",
                                         reason="feedback", diagnostic=e["feedback_type"]))
            continue
        dtype, diag = _diag_type_and_text(e["diagnostic"])
        rcpts.append(_recipient(
            addr, _status_field(str(e["status"] or "")), diag,
            (str(e["action"]).lower() if e["action"] else None), diag_type=dtype,
            remote_mta=_after_semicolon(e["remote_mta"]), last_attempt=e["last_attempt"],
            hint=e["hint"]))
    if not rcpts:
        return replace(base, kind="none", recipients=(), family="amazonses")
    return replace(base, kind=kind, recipients=tuple(rcpts), family="amazonses")


# Complaint reports that are not ARF: Microsoft JMRP (Hotmail/Outlook.com) and Amazon SES
# mail a multipart/mixed "complaint about message from <IP>" with the original attached.
_JMRP_FROM = re.compile(r"\b(?:staff@hotmail\.com|complaints@email-abuse\.amazonses\.com)\b",
                        re.I)
_JMRP_SUBJECT = re.compile(r"complaint about message from ", re.I)


def _feedback(parts: list[str], text: str, orig: tuple[tuple[str, str], ...],
              base: BounceReport) -> BounceReport:
    """RFC 5965: one "feedback" entry per complained-about recipient."""
    addrs: list[str] = []
    fields: dict[str, str] = {}
    for p in parts:
        for line in p.split("\n"):
            m = re.match(r"^([A-Za-z\-]+):\s*(.*)$", line)
            if m:
                k = m.group(1).lower()
                fields.setdefault(k, m.group(2).strip())
                if k in ("original-rcpt-to", "removal-recipient") and len(addrs) < _TO_ADDRESSES:
                    a = _clean_addr(m.group(2))
                    if a and a not in addrs:
                        addrs.append(a)
    if not addrs:
        # Microsoft's JMRP complaints (not ARF): the original recipient in a header of
        # the returned message.
        for k, v in orig:
            if k.lower() == "x-hmxmroriginalrecipient" and _clean_addr(v):
                addrs.append(_clean_addr(v))
                break
    if not addrs:
        for k, v in orig:
            if k.lower() == "to":
                addrs.extend(_clean_addr(a) for a in _addresses_in(v) if _clean_addr(a))
                break
    if not addrs:
        # Hotmail-style complaints carry the original's recipient in the text only.
        for a in _addresses_in(cut_text_for_feedback(text)):
            ca = _clean_addr(a)
            if ca and ca not in addrs:
                addrs.append(ca)
                break
    ftype = fields.get("feedback-type", "abuse")
    rcpts = tuple(
        BounceRecipient(address=a, action=None, status=None, kind="unknown", reason="feedback",
                        diagnostic=ftype)
        for a in addrs
    )
    return replace(base, kind="feedback", recipients=rcpts, family="arf",
                   reporting_mta=_after_semicolon(fields.get("reporting-mta")))


def cut_text_for_feedback(text: str) -> str:
    m = re.search(r"^(?:To|X-Original-To):\s*(.*)$", text, re.M)
    return m.group(1) if m else ""
