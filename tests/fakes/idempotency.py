"""Powertools' idempotency persistence layer in memory (DynamoDB in production)."""

from __future__ import annotations

import threading

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import (
    BasePersistenceLayer,
    DataRecord,
)


class MemoryPersistence(BasePersistenceLayer):
    """The records by idempotency key; a put over a live record fails as DynamoDB's would."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, DataRecord] = {}
        self.lock = threading.Lock()  # DynamoDB's conditional put is atomic; so is this one

    def _get_record(self, idempotency_key: str) -> DataRecord:
        try:
            return self.records[idempotency_key]
        except KeyError:
            raise IdempotencyItemNotFoundError from None

    def _put_record(self, data_record: DataRecord) -> None:
        with self.lock:  # DynamoDB's condition: attribute_not_exists(id) OR expired
            old = self.records.get(data_record.idempotency_key)
            if old is not None and not old.is_expired:
                # As the DynamoDB layer does: the stored payload's hash must match (else a 409).
                self._validate_payload(data_payload=data_record, stored_data_record=old)
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            self.records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        self.records.pop(data_record.idempotency_key, None)
