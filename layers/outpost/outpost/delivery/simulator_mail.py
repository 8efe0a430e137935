"""The mail the mailbox simulator sends back (issue 14 item 4), built from the real signed
message: an RFC 3464 DSN, an RFC 5965 ARF complaint, an RFC 3834 auto-reply. Pure: bytes in,
bytes out; delivery/simulator.py drops them where inbound mail lands for the bounce processor.

Each is addressed as a real one is: the DSN and the auto-reply to the message's VERP return
path (RFC 5321 section 4.5.5: notifications go to the reverse-path); the ARF report as a
feedback loop sends it, to the bounce domain's abuse mailbox, quoting the original as delivered
(with the Return-Path the final MTA adds), which is how the bounce processor matches it.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formatdate, make_msgid

from ..sandbox import SIMULATOR_DOMAIN
from ..signing import split_header_section

MTA = SIMULATOR_DOMAIN
DSN_STATUS = "5.1.1"
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")  # the original's Message-ID, quoted only when it is one
DSN_DIAGNOSTIC = "smtp; 550 5.1.1 <{addr}>: Recipient address rejected: User unknown (Outpost simulator)"


def _headers(data: tuple[bytes, ...]) -> bytes:
    """The signed message's header section as sent (the DKIM-Signature first)."""
    message = data[-1]
    head, _ = split_header_section(message)
    return b"".join(data[:-1]) + head


def _date(now: float) -> str:
    return format_datetime(datetime.fromtimestamp(now, UTC))


def _multipart(head: str, boundary: str, parts: list[bytes]) -> bytes:
    out = head.encode() + b"\r\nThis is a MIME-encapsulated message.\r\n\r\n"
    for p in parts:
        out += f"--{boundary}\r\n".encode() + p + (b"" if p.endswith(b"\r\n") else b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


def build_dsn(data: tuple[bytes, ...], *, address: str, return_path: str, envelope_id: str,
              now: float | None = None) -> bytes:
    """A hard bounce (5.1.1) of `address`: multipart/report; report-type=delivery-status
    (RFC 3464, RFC 6522), with the original's headers (text/rfc822-headers, RET=HDRS)."""
    now = time.time() if now is None else now
    boundary = f"=_outpost_sim_{secrets.token_hex(8)}"
    diagnostic = DSN_DIAGNOSTIC.format(addr=address)
    head = (f"From: Mail Delivery System <MAILER-DAEMON@{MTA}>\r\n"
            f"To: <{return_path}>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {_date(now)}\r\n"
            f"Message-ID: {make_msgid(domain=MTA)}\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n')
    text = (f"This is the Outpost mailbox simulator ({MTA}).\r\n\r\n"
            "Your message could not be delivered to one or more recipients.\r\n\r\n"
            f"<{address}>: {diagnostic}\r\n")
    status = (f"Reporting-MTA: dns; {MTA}\r\nOriginal-Envelope-Id: {envelope_id}\r\n"
              f"Arrival-Date: {_date(now)}\r\n\r\n"
              f"Final-Recipient: rfc822; {address}\r\nOriginal-Recipient: rfc822; {address}\r\n"
              f"Action: failed\r\nStatus: {DSN_STATUS}\r\nRemote-MTA: dns; {MTA}\r\n"
              f"Diagnostic-Code: {diagnostic}\r\nLast-Attempt-Date: {_date(now)}\r\n")
    return _multipart(head, boundary, [
        b"Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + text.encode(),
        b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        + status.encode(),
        b"Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + _headers(data)])


def build_arf(data: tuple[bytes, ...], *, address: str, return_path: str, sending_domain: str,
              bounce_domain: str, now: float | None = None) -> bytes:
    """An abuse complaint about the message to `address`: multipart/report;
    report-type=feedback-report (RFC 5965) quoting the message's headers as delivered."""
    now = time.time() if now is None else now
    boundary = f"=_outpost_arf_{secrets.token_hex(8)}"
    head = (f"From: Feedback Loop <feedback@{MTA}>\r\n"
            f"To: <abuse@{bounce_domain}>\r\n"
            "Subject: FW: complaint (Outpost simulator)\r\n"
            f"Date: {_date(now)}\r\n"
            f"Message-ID: {make_msgid(domain=MTA)}\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n')
    report = ("Feedback-Type: abuse\r\nUser-Agent: OutpostSimulator/1.0\r\nVersion: 1\r\n"
              f"Original-Mail-From: <{return_path}>\r\nOriginal-Rcpt-To: <{address}>\r\n"
              f"Arrival-Date: {_date(now)}\r\nReporting-MTA: dns; {MTA}\r\n"
              f"Reported-Domain: {sending_domain}\r\n")
    # The original as the final MTA stored it: with the Return-Path it adds (RFC 5321 4.4).
    original = f"Return-Path: <{return_path}>\r\n".encode() + _headers(data)
    return _multipart(head, boundary, [
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        + f"This is an email abuse report for a message to <{address}> (Outpost simulator).\r\n".encode(),
        b"Content-Type: message/feedback-report\r\n\r\n" + report.encode(),
        b"Content-Type: text/rfc822-headers\r\n\r\n" + original])


def build_autoreply(data: tuple[bytes, ...], *, address: str, return_path: str, subject: str,
                    message_id: str | None, now: float | None = None) -> bytes:
    """An out-of-office reply from `address` to the return path (RFC 3834: Auto-Submitted:
    auto-replied, In-Reply-To the original)."""
    now = time.time() if now is None else now
    message_id = message_id if message_id and _MSG_ID.fullmatch(message_id) else None
    refs = f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n" if message_id else ""
    return (f"From: <{address}>\r\nTo: <{return_path}>\r\n"
            f"Subject: {_header_text('Auto: ' + subject[:200])}\r\n"
            f"Date: {formatdate(now, usegmt=True)}\r\n"
            f"Message-ID: {make_msgid(domain=MTA)}\r\n" + refs +
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "I am out of the office until further notice (Outpost simulator auto-reply).\r\n").encode()


def _header_text(text: str) -> str:
    """User-written text as one header field's value: control characters (CR and LF above
    all: an injected field, or an early end of the header section) become spaces, and
    non-ASCII is RFC 2047-encoded, as the auto-reply is us-ascii."""
    text = " ".join(_CONTROLS.sub(" ", text).split())
    return text if text.isascii() else Header(text, "utf-8").encode(linesep="\r\n")


def original_message_id(data: tuple[bytes, ...]) -> str | None:
    """The Message-ID of the signed message (for the auto-reply's In-Reply-To)."""
    import email.parser
    import email.policy

    head, _ = split_header_section(data[-1])
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    value = msg.get("Message-ID")
    return str(value).strip() if value else None
