"""The library's error tree: small, readable in one screen (httpx's `_exceptions.py`).

API errors carry an HTTP status, a stable code and the field they are about; they become
`{"error": {"code", "message", "field"}}` at the edge.

The sender's errors carry facts, never verdicts: the command (stage) that failed, the reply
code and text, what the server lacked or what was missing. `delivery/trouble.py judge()` is
the one place that turns them into a verdict (transient or permanent, scope, enhanced status).
The transport maps aiosmtplib's exceptions into this tree in one place (transport.py
`_smtp_error`).

    OutpostError
      ApiError: InvalidRequestError, UnauthorizedError, ForbiddenError (SendingPausedError),
        NotFoundError, ConflictError,
        PayloadTooLargeError, ThrottledError (UploadLimitReachedError)
      DnsUnavailableError (a domain check's lookup failed)
      MessageBuildError, AddressError (also ValueError)
      DkimKeyError, DkimSigningError (also ValueError), NoSigningKeyError
      StsPolicyError, StsLookupTimeoutError, StsMxMismatchError
      StoreBusyError
      DnsError: NoSuchDomainError, NullMxError, RefusedAddressError, DnsLookupError
      SmtpError: ReplyError, StageError, StaleSessionError, NoTimeLeftError, SlowPeerError,
                 RequirementError
      WebhookUrlError (also ValueError), WebhookTransportError
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class OutpostError(Exception):
    """Base of every error Outpost raises on purpose."""


class ConfigError(OutpostError, ValueError):
    """A setting the stack was given cannot be used; the message names the setting."""


class ApiError(OutpostError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class InvalidRequestError(ApiError):
    status = 400
    code = "validation_error"


class UnauthorizedError(ApiError):
    status = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    status = 403
    code = "forbidden"


class SendingPausedError(ForbiddenError):
    """The reputation circuit breaker paused this sending domain or API key (issue 11 item 6):
    the message names which, its rate and the threshold; an admin resumes it."""

    code = "sending_paused"


class NotFoundError(ApiError):
    status = 404
    code = "not_found"


class ConflictError(ApiError):
    status = 409
    code = "conflict"


class InProgressError(ConflictError):
    """The first request with this idempotency key is still running (a 409 too; SMTP: 451)."""


class LayoutInUseError(ConflictError):
    """A layout's delete lost to a template that started using it (store.TemplateStore)."""


class PayloadTooLargeError(ApiError):
    status = 413
    code = "payload_too_large"


class ThrottledError(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, field="Authorization")
        self.retry_after = retry_after


class UploadLimitReachedError(ThrottledError):
    """The key's uploads for today are used up (a named limit: uploads_per_key_per_day)."""

    code = "upload_limit_reached"

    def __init__(self, message: str, retry_after: int) -> None:
        ApiError.__init__(self, message, field=None)
        self.retry_after = retry_after


class DnsUnavailableError(OutpostError):
    """A lookup failed for a reason other than 'no such record' (timeout, SERVFAIL)."""


class MessageBuildError(OutpostError, ValueError):
    """A send request cannot become a message (mime.py); `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AddressError(OutpostError, ValueError):
    """An address or a domain name is not valid (addresses.py); the text says why."""


class DkimKeyError(OutpostError, ValueError):
    """A key or a key secret is unusable (bad PEM, wrong type, too small, bad JSON shape)."""


class DkimSigningError(OutpostError, ValueError):
    """The message cannot be signed (e.g. it has no From field, RFC 6376 §5.4)."""


class NoSigningKeyError(OutpostError):
    """No DKIM key is configured for the sender's domain: Outpost sends no unsigned mail."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"no DKIM key is configured for {domain}; not sending unsigned mail")
        self.domain = domain


class StsPolicyError(OutpostError):
    """The MTA-STS TXT record, the fetch or the policy text is not usable."""


class StsLookupTimeoutError(OutpostError):
    """The MTA-STS lookup for `domain` did not finish in time (RFC 8461 §3.3)."""

    def __init__(self, message: str, domain: str) -> None:
        super().__init__(message)
        self.domain = domain


class StsMxMismatchError(OutpostError):
    """An enforced MTA-STS policy matches none of the domain's MX hosts (RFC 8461 §4.1)."""

    def __init__(self, domain: str, hosts: Sequence[str], patterns: Sequence[str]) -> None:
        super().__init__(f"no MX host of {domain} ({', '.join(hosts)}) matches its "
                         f"MTA-STS policy (mx: {', '.join(patterns)})")
        self.domain, self.hosts, self.patterns = domain, tuple(hosts), tuple(patterns)


class StoreBusyError(OutpostError):
    """DynamoDB kept answering part of a batch request with UnprocessedItems/UnprocessedKeys
    (throttling) after the store's backoff: the caller's request did not complete. Also a
    create too slow to commit safely (store.COMMIT_WITHIN)."""


# ---- DNS: what the lookup found, not what it means for delivery ----------------------------
class DnsError(OutpostError):
    """A DNS lookup failed; the subclass says how."""


class NoSuchDomainError(DnsError):
    """NXDOMAIN, or a domain with neither MX nor address records."""


class NullMxError(DnsError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail."""


class RefusedAddressError(DnsError):
    """The MX hosts resolve only to addresses the sender refuses (private, loopback...)."""

    def __init__(self, host: str, refused: Sequence[str], message: str | None = None) -> None:
        super().__init__(message or f"{host} resolves only to non-public addresses ({', '.join(refused[:4])}): refused")
        self.host, self.refused = host, tuple(refused)


class DnsLookupError(DnsError):
    """The lookup did not complete: a timeout, SERVFAIL, no nameserver answered, no time left."""


# ---- SMTP: one session with one MX host -------------------------------------------------------
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply's text, if it has one."""
    # imported here: the package's __init__ compiles the classifier, which the API never uses
    from .bounces.limits import DIAGNOSTIC_LIMIT

    m = _ENHANCED.match(text, 0, DIAGNOSTIC_LIMIT)  # bounded like the text judged
    return ".".join(m.groups()) if m else None


class SmtpError(OutpostError):
    """Something went wrong in an SMTP session; `command` names the stage: CONNECT, EHLO,
    STARTTLS, RSET, MAIL, RCPT, DATA, EOD (the content and the reply to the final dot)."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.command = command


class ReplyError(SmtpError):
    """A negative reply: its code, text and enhanced status, and the command it answered."""

    def __init__(self, code: int, text: str, command: str) -> None:
        super().__init__(f"{command}: {code} {text}", command)
        self.code, self.text = code, text

    @property
    def enhanced(self) -> str | None:
        return enhanced_status(self.text)


class StageError(SmtpError):
    """A failure below SMTP (timeout, disconnect, TLS) at a named stage. `after_dot`: the
    final dot had been sent, so the server may have taken the message (RFC 1047)."""

    def __init__(self, command: str, cause: BaseException, *, after_dot: bool = False) -> None:
        super().__init__(f"{command}: {type(cause).__name__}: {cause}", command)
        self.cause, self.after_dot = cause, after_dot


class StaleSessionError(SmtpError):
    """A pooled connection failed its RSET probe: open a new one; no recipient is charged."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "RSET")


class NoTimeLeftError(SmtpError):
    """Too little time is left to go on (a TLS fallback's reconnect, the wait for the reply to
    the final dot): nothing failed, no recipient is charged, the caller releases the work."""


class SlowPeerError(SmtpError):
    """On a lane with a limit before the final dot (the new-mail lane's `dot_within`), the
    peer had not answered `command` (or taken the content) when the limit ran out. The
    transaction was abandoned and the session closed before the dot, so the server discards
    it (RFC 5321 §4.1.1.4): nothing was delivered and nothing failed for the recipient; the
    caller hands the work to a lane that waits (no verdict, no attempt)."""

    def __init__(self, command: str, limit: float) -> None:
        super().__init__(f"{command}: no reply within the {limit:g} s this lane waits before the final dot",
                         command)
        self.limit = limit


class RequirementError(SmtpError):
    """Outpost itself will not go on with this server. `lacks` says what is missing:
    "size" (the message exceeds the server's SIZE, `limit`), "smtputf8", "8bitmime",
    "starttls" (not offered, or refused, where TLS is required), "tls" (the handshake failed
    where TLS is required), "certificate" (it did not verify where verification is required)."""

    def __init__(self, message: str, *, lacks: str, command: str, limit: int | None = None) -> None:
        super().__init__(message, command)
        self.lacks, self.limit = lacks, limit


# ---- slots (issue 11: fleet-wide shaping) ---------------------------------------------------
class ShapingWaitError(OutpostError):
    """Not a failure of anyone's: fleet-wide shaping has no room for this provider now (every
    connection slot taken, a rate window full, the IP warm-up's daily cap reached), so the
    recipient waits, with no attempt counted. `reason`: "shaping" or "warmup"."""

    def __init__(self, reason: str, provider: str, detail: str) -> None:
        super().__init__(f"waiting for {provider} ({reason}): {detail}")
        self.reason, self.provider, self.detail = reason, provider, detail


# ---- events (issue 12) ------------------------------------------------------------------------
class EventPublishError(OutpostError):
    """A sink could not take some events (EventBridge kept failing entries): the batch item
    fails and Lambda retries it; `failed` is how many entries were left."""

    def __init__(self, message: str, failed: int = 0) -> None:
        super().__init__(message)
        self.failed = failed


class StoreStalledError(OutpostError):
    """Every thread kept for store calls (delivery/store_calls.py) is still busy with an
    earlier call that has not returned: the store is stalled, and this call was not started
    (the caller takes its "store unavailable" branch at once)."""
# ---- webhooks (issue 12) ------------------------------------------------------------------------
class WebhookUrlError(OutpostError, ValueError):
    """A webhook URL Outpost may not call (webhooks/ssrf.py): the message says why."""


class WebhookTransportError(OutpostError):
    """A webhook POST got no HTTP answer: refused, reset, TLS failed, or the 10 s ran out
    (`timeout`)."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
