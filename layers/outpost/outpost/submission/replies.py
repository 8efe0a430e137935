"""The one table from the error tree (errors.py) to SMTP replies, and enhanced status codes
(RFC 2034, RFC 3463) on every reply the server sends.

Temporary (4xx: the client keeps the message and retries) for what may pass: a rate limit,
the same message still being accepted, a store that failed before the commit (a queue failing
after it is no error: the message is accepted, api/service.py, s17f). Permanent (5xx) for what
the same message from the same key will always meet.
"""

from __future__ import annotations

import re

from ..errors import (
    ConflictError,
    ForbiddenError,
    InProgressError,
    InvalidRequestError,
    PayloadTooLargeError,
    SendingPausedError,
    ThrottledError,
    UnauthorizedError,
)

__all__ = ["AUTH_LOCKED", "AUTH_OK", "BAD_CREDENTIALS", "BARE_LINE_END", "BUSY", "NEED_AUTH", "NEED_TLS",
           "SHUTTING_DOWN", "TOO_BIG", "TOO_MANY_CONNECTIONS", "TOO_MANY_RECIPIENTS", "enhance", "queued",
           "reply_for"]

NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"  # RFC 3207 §4
NEED_AUTH = "530 5.7.0 Authentication required"  # RFC 4954 §6
AUTH_OK = "235 2.7.0 Authentication successful"
BAD_CREDENTIALS = "535 5.7.8 Authentication credentials invalid"  # RFC 4954 §6
AUTH_LOCKED = "454 4.7.0 Too many failed authentications from your address; try again later"
AUTH_LINE_TOO_LONG = "500 5.5.6 Authentication exchange line is too long"  # RFC 4954 §6
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure"  # RFC 4954 §6
TOO_BIG = "552 5.3.4 Message too big for system"  # RFC 1870 §6, RFC 3463
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address; try again later"
TEMPORARY = "451 4.3.0 Temporary failure; try again later"
BARE_LINE_END = "550 5.5.2 Bare CR or LF in the message: lines must end with CRLF"  # RFC 5321 §2.3.8
BUSY = "451 4.3.2 Too many messages in flight; try again later"  # RFC 3463: not accepting messages
SHUTTING_DOWN = "421 4.3.2 Service shutting down"  # RFC 5321 §3.8, RFC 3463: the process is stopping

# Most specific first: SendingPausedError is a ForbiddenError, InProgressError a ConflictError,
# UploadLimitReachedError a ThrottledError.
_TABLE: tuple[tuple[type[Exception], str], ...] = (
    (SendingPausedError, "550 5.7.1 Sending is paused for this domain or key: {message}"),
    (ForbiddenError, "550 5.7.1 {message}"),  # the From domain: unverified, or not this key's
    (UnauthorizedError, BAD_CREDENTIALS),  # the key was revoked since AUTH
    (ThrottledError, "451 4.7.1 Rate limit reached for this API key; try again later"),
    (PayloadTooLargeError, TOO_BIG),
    (InProgressError, "451 4.3.0 This message is still being accepted; try again later"),
    (ConflictError, "554 5.6.0 This Message-ID was accepted within 24 hours with other content"),
    (InvalidRequestError, "550 5.6.0 {message}"),  # the message itself (RFC 5322) or a recipient
)


def reply_for(exc: BaseException) -> str:
    """The reply to a DATA (or a command) that raised `exc`; anything unforeseen is temporary
    (Postal: an unknown error counts as transient, never a silent drop)."""
    for kind, reply in _TABLE:
        if isinstance(exc, kind):
            return reply.format(message=_one_line(getattr(exc, "message", str(exc))))
    return TEMPORARY


def queued(message_id: str) -> str:
    """The contract's reply to an accepted message: `250 2.0.0 ... queued as <id>`."""
    return f"250 2.0.0 OK: queued as {message_id}"


def _one_line(text: str) -> str:
    """One line of ASCII: a reply is ASCII (RFC 5321 §4.2; UTF-8 only under SMTPUTF8, RFC 6531),
    and the error texts cite RFC sections with a section sign, or hold a client's UTF-8."""
    text = text.replace("\u00a7", "section ").encode("ascii", "replace").decode()
    return " ".join(text.split())[:400]


# aiosmtpd's own replies that carry no enhanced code, with the one RFC 3463 gives them.
_STOCK = {
    "530 Must issue a STARTTLS command first": NEED_TLS,
    "552 Error: Too much mail data": TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)",
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
}
_CLASS = {"2": "2.0.0", "4": "4.0.0", "5": "5.5.0"}
_HAS_CODE = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def enhance(reply: str) -> str:
    """`reply` with an enhanced status code (RFC 2034 §3: every 2xx, 4xx, 5xx reply but the
    greeting's and EHLO's, which the caller does not pass here)."""
    if reply in _STOCK:
        return _STOCK[reply]
    if len(reply) < 4 or reply[0] not in _CLASS or not reply[:3].isdigit() or _HAS_CODE.match(reply):
        return reply
    code = reply[:3]
    detail = {"503": "5.5.1", "501": "5.5.4", "502": "5.5.1", "500": "5.5.2", "555": "5.5.4",
              "504": "5.5.4", "553": "5.1.3", "250": "2.0.0", "221": "2.0.0", "220": "2.0.0"}
    return f"{code}{reply[3]}{detail.get(code, _CLASS[reply[0]])} {reply[4:]}"
