"""Standard Webhooks signing (https://www.standardwebhooks.com, "Signature scheme").

  webhook-id         the event id: the same on every retry and replay of the event
  webhook-timestamp  Unix seconds of this attempt
  webhook-signature  "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>", one per signing
                     secret, space separated (a rotation's overlap signs with both)

A secret is "whsec_" + base64 of SECRET_BYTES random bytes; the HMAC key is the decoded bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 bytes; 32 is HMAC-SHA256's block of output


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed_headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with every given secret."""
    if not secrets_:
        raise ValueError("an endpoint needs at least one signing secret")
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)}
