"""The library's error tree: small, readable in one screen.

API errors carry an HTTP status, a stable code and the field they are about; they become
`{"error": {"code", "message", "field"}}` at the edge.
"""

from __future__ import annotations


class OutpostError(Exception):
    """Base of every error Outpost raises on purpose."""


class ApiError(OutpostError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class ValidationFailed(ApiError):
    status = 400
    code = "validation_error"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class MessageBuildError(OutpostError, ValueError):
    """A send request cannot become a message (mime.py); `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DnsError(OutpostError):
    """A DNS lookup failed. `permanent` for NXDOMAIN / null MX, transient otherwise."""

    def __init__(self, message: str, *, permanent: bool, status: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


class StateConflict(OutpostError):
    """A conditional write lost: somebody else moved the record first."""


class StoreBusyError(OutpostError):
    """DynamoDB kept answering part of a batch request with UnprocessedItems/UnprocessedKeys
    (throttling) after the store's backoff: the caller's request did not complete."""
