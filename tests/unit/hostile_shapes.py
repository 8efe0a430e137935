"""Generators of hostile inbound mail, one per shape issue 8 measured, each of about ``size``
bytes.  Shared by tests/unit/test_bounce_hostile.py and bench/hostile_bounces.py."""

from __future__ import annotations

from collections.abc import Callable

_HEAD = (b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
         b"Subject: Undelivered Mail Returned to Sender\n"
         b"MIME-Version: 1.0\n")


def _fill(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def to_header(size: int) -> bytes:
    """One To: header of a single character repeated (dsn.py's address regex)."""
    return _HEAD + b"To: " + _fill(b"a", size) + b"\n\nThe mail system\n"


def blank_lines(size: int) -> bytes:
    """A text body of " \\n" lines (``^\\s*`` under re.M in the family markers)."""
    return _HEAD + b"To: x@example.com\n\n" + _fill(b" \n", size)


def html_lt(size: int) -> bytes:
    """A text/html part of "<" (the tag-stripping regex)."""
    return (_HEAD + b"Content-Type: multipart/alternative; boundary=\"b\"\n\n"
            b"--b\nContent-Type: text/html\n\n" + _fill(b"<", size) + b"\n--b--\n")


def folded_header(size: int) -> bytes:
    """One header folded over very many short continuation lines (header memory)."""
    return _HEAD + b"X-Junk: a\n" + _fill(b" b\n", size) + b"\nbody\n"


def many_headers(size: int) -> bytes:
    """Very many short header lines."""
    return _HEAD + _fill(b"X-A: b\n", size) + b"\nbody\n"


def empty_parts(size: int) -> bytes:
    """Millions of empty MIME parts (part count)."""
    return (_HEAD + b"Content-Type: multipart/mixed; boundary=\"b\"\n\n"
            + _fill(b"--b\n\n", size) + b"--b--\n")


def nested_parts(size: int) -> bytes:
    """multipart inside multipart, as deep as the size allows (MIME nesting)."""
    unit = b"Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\n"
    return _HEAD + _fill(unit, size) + b"\nx\n"


def nested_messages(size: int) -> bytes:
    """message/rfc822 inside message/rfc822 (MIME nesting without boundaries)."""
    unit = b"Content-Type: message/rfc822\n\n"
    return _HEAD + _fill(unit, size) + b"\nx\n"


def final_recipient(size: int) -> bytes:
    """A delivery-status part whose Final-Recipient is one character repeated."""
    return (_HEAD + b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"b\"\n\n--b\nContent-Type: message/delivery-status\n\n"
            b"Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; "
            + _fill(b"a", size) + b"\nAction: failed\nStatus: 5.1.1\n\n--b--\n")


def address_lines(size: int) -> bytes:
    """One address repeated on lines with no blank line between them (the paragraph scans
    around each mention of an address)."""
    return (_HEAD + b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n"
            + _fill(b"user@example.com said no\n", size)
            + b"\n--b\nContent-Type: message/delivery-status\n\n"
            b"Final-Recipient: rfc822; user@example.com\nAction: failed\nStatus: 5.1.1\n"
            b"\n--b--\n")


def long_line(size: int) -> bytes:
    """One body line of "a@" repeated (address patterns that backtrack over '@')."""
    return _HEAD + b"To: x@example.com\n\n" + _fill(b"a@", size) + b"\n"


def base64_body(size: int) -> bytes:
    """A big base64 text part (decoding must stay bounded too)."""
    return (_HEAD + b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
            + _fill(b"ICAgCiAgIAogICAKICAgCiAgIAo=\n", size))


def content_type_params(size: int) -> bytes:
    """A multipart Content-Type of very many ';' (the email package's parameter parser)."""
    return (_HEAD + b"Content-Type: multipart/mixed; boundary=b" + _fill(b";", size)
            + b"\n\n--b\n\nx\n--b--\n")


def many_addresses(size: int) -> bytes:
    """A To: header listing very many distinct-looking addresses."""
    return _HEAD + b"To: " + _fill(b"a@b.example, ", size) + b"\n\nThe mail system\n"


def many_recipients(size: int) -> bytes:
    """A delivery-status part with very many recipient blocks, each with a diagnostic."""
    block = (b"Final-Recipient: rfc822; user%d@example.com\nAction: failed\nStatus: 5.1.1\n"
             b"Diagnostic-Code: smtp; 550 5.1.1 <" + b"x" * 200 + b"> user unknown\n\n")
    blocks = b"".join(block % i for i in range(max(1, size // len(block))))
    return (_HEAD + b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"b\"\n\n--b\nContent-Type: message/delivery-status\n\n"
            + blocks + b"--b--\n")


def quoted_lines(size: int) -> bytes:
    """Lines of '"a' ending in an '@' with no domain, under a mailer-daemon From (the
    fallback row's display-name pattern)."""
    return (_HEAD + b"To: x@example.com\n\n"
            + _fill(b'"a' * 450 + b"@\n", size))


def status_blocks(size: int) -> bytes:
    """A delivery-status part of very many tiny field blocks (one sub-message each)."""
    return (_HEAD + b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"b\"\n\n--b\nContent-Type: message/delivery-status\n\n"
            + _fill(b"A: b\n\n", size) + b"--b--\n")


def recipients_without_diagnostic(size: int) -> bytes:
    """Very many recipient blocks with no Diagnostic-Code (each sends the parser to the text
    part for an explanation) after a large text part."""
    text = _fill(b"The mail system could not deliver your message.\n", min(size // 2, 120_000))
    blocks = b"".join(b"Final-Recipient: rfc822; u%d@example.com\nStatus: 5.1.1\n\n" % i
                      for i in range(max(1, size // 2 // 45)))
    return (_HEAD + b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n" + text
            + b"\n--b\nContent-Type: message/delivery-status\n\n" + blocks + b"--b--\n")


SHAPES: dict[str, Callable[[int], bytes]] = {
    f.__name__: f for f in (to_header, blank_lines, html_lt, folded_header, many_headers,
                            empty_parts, nested_parts, nested_messages, final_recipient,
                            address_lines, long_line, base64_body, content_type_params,
                            many_addresses, many_recipients, quoted_lines, status_blocks,
                            recipients_without_diagnostic)
}


def smtp_reply(size: int) -> list[str]:
    """Hostile SMTP reply texts of about ``size`` characters (for judge() / classify())."""
    return [
        "5.1.1 " + "a" * size, " " * size, "5.1." * (size // 4), "<" * size,
        "user unknown " * (size // 13), "550 " * (size // 4), "a@" * (size // 2),
        ("1." * (size // 2)), "\n" * size,
    ]
