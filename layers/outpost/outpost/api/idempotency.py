"""Idempotency-Key: a request runs at most once per (API key, Idempotency-Key, operation) for 24 h.

Everything a run depends on comes with the request, passed explicitly: the operation, the
caller's key id, the header's value, the body (hashed: the same key with another body is a 409)
and the invocation's context (Powertools expires an in-progress record when the invocation's
time runs out). Nothing is kept between requests but the persistence layer, so two requests
in flight at once, from one API key or two, cannot see each other's state. Records live in the
persistence layer Powertools is given (DynamoDB's IdempotencyTable in production).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError, InProgressError
from ..records import CreateKey

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

IDEMPOTENCY_TTL = 24 * 3600
# The name the records have carried since SendService._run made them (Powertools prefixes each
# record's hash with the function's name and the decorated function's): kept, so that a retry
# that crosses a deploy still finds the record its first attempt left.
RECORD_NAME = "outpost.api.service.SendService._run"


@dataclass(frozen=True)
class IdempotentRequest:
    """One request that carries an Idempotency-Key."""

    operation: str  # "send" or "batch": one key may name one of each
    key_id: str  # the caller's API key ("" when the service is called without one)
    idempotency_key: str  # the Idempotency-Key header, as sent
    body: Any  # the request body as received (JSON-able); its hash is checked on a replay

    def payload(self) -> dict[str, Any]:
        """What Powertools hashes: the record's key from the first three, the body for the 409."""
        return {"key_id": self.key_id, "idempotency_key": self.idempotency_key,
                "operation": self.operation, "body": self.body}

    def create_key(self, index: int | None = None, busy: float | None = None) -> CreateKey:
        """What the message this request creates (the batch's `index`th) is keyed by in the store
        (store.MessageStore.create): a retry that gets past the idempotency record (the first
        run was killed after its create committed, and its in-progress mark has expired) finds
        that message instead of making a second copy. The digest is the body's, as the 409's.
        `busy`: the seconds this run may go on (None: no deadline that stops it; r16)."""
        parts = [self.operation, self.key_id, self.idempotency_key, *([] if index is None else [index])]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        body = json.dumps(self.body, sort_keys=True, separators=(",", ":"), default=str)
        return CreateKey(key, hashlib.sha256(body.encode()).hexdigest(), IDEMPOTENCY_TTL, busy)


class Once:
    """Runs `work` at most once per IdempotentRequest; a replay returns the first answer."""

    def __init__(self, persistence: BasePersistenceLayer, ttl: int = IDEMPOTENCY_TTL) -> None:
        self.persistence, self.ttl = persistence, ttl

    def run(self, request: IdempotentRequest, work: Callable[[], dict],
            context: LambdaContext | None = None) -> tuple[dict, bool]:
        """(the answer, whether it is a replay). 409 (ConflictError) for the same key with another
        body, or while the first request with the key is still running."""
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        replayed = False

        def mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
            nonlocal replayed
            replayed = True
            return response

        config = IdempotencyConfig(event_key_jmespath="[key_id, idempotency_key, operation]",
                                   payload_validation_jmespath="body", expires_after_seconds=self.ttl,
                                   response_hook=mark_replayed)
        if context is not None:
            config.register_lambda_context(context)
        prefix = f"{os.getenv('AWS_LAMBDA_FUNCTION_NAME', 'test-func')}.{RECORD_NAME}"
        once = idempotent_function(data_keyword_argument="request", persistence_store=self.persistence,
                                   config=config, key_prefix=prefix)(_call_work)
        try:
            out = once(request=request.payload(), work=work)
        except IdempotencyValidationError:
            raise ConflictError("this Idempotency-Key was used with a different request body",
                           field="Idempotency-Key") from None
        except IdempotencyAlreadyInProgressError:
            raise InProgressError("a request with this Idempotency-Key is still in progress; retry",
                           field="Idempotency-Key") from None
        return out, replayed


def _call_work(request: dict[str, Any], work: Callable[[], dict]) -> dict:
    return work()
