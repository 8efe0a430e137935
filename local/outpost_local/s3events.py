"""S3 event notifications, emulated: a new object under a function's S3 event prefix invokes
the function with S3's ObjectCreated event (the template's `Type: S3` events: the bounce
processor's `inbound/s3/`, where the sandbox's simulator drops its DSNs and reports).

moto's server mode does not deliver bucket notifications to a Lambda, so this polls
ListObjectsV2 under the prefix and invokes once per key it has not seen, and again for a key
whose object was overwritten (its ETag or LastModified changed: S3 notifies every PUT, and a
PUT over a key is a new object). The local moto stamps every object with its own LastModified,
listed to the microsecond (moto_server.patch_s3), so an overwrite with the same bytes within a
second is seen too; PUTs over one key between two polls (0.2 s) are one event, for the last
object (which is what a function reading the key gets either way). Objects that were there
before it started are not notified (as a notification configuration added to a bucket does not
replay old objects). Asynchronous invocation, as S3's: a failure is logged, and the invocation
is retried twice (Lambda's MaximumRetryAttempts for async events in the template).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any
from urllib.parse import quote_plus

from .poller import _Polling
from .runtime import LocalFunction

log = logging.getLogger("outpost_local.s3events")

ASYNC_RETRIES = 2
KEPT_RESULTS = 100  # the last invocations' results (for a look in a debugger); `make dev` runs for hours


def s3_event(bucket: str, key: str, size: int, config_id: str, region: str = "us-east-1") -> dict:
    """S3's ObjectCreated:Put event for one object (keys are URL-encoded, as S3 sends them)."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region,
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": config_id,
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size}},
    }]}


class S3NotificationPoller(_Polling):
    def __init__(self, s3: Any, bucket: str, prefix: str, function: LocalFunction, *, name: str) -> None:
        super().__init__(f"s3-notify-{name}")
        self.s3, self.bucket, self.prefix, self.function, self.name = s3, bucket, prefix, function, name
        self.seen: dict[str, tuple[str, str]] = {key: v for key, _, v in self._listing()}  # not replayed
        self.results: deque[Any] = deque(maxlen=KEPT_RESULTS)

    def _listing(self) -> list[tuple[str, int, tuple[str, str]]]:
        """(key, size, version) of each object under the prefix; the version is (ETag,
        LastModified), which an overwrite changes."""
        out: list[tuple[str, int, tuple[str, str]]] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self.s3.list_objects_v2(**kwargs)
            out += [(o["Key"], int(o.get("Size", 0)), (str(o.get("ETag", "")), str(o.get("LastModified", ""))))
                    for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def poll_once(self) -> int:
        listing = self._listing()
        new = [(k, n) for k, n, v in listing if self.seen.get(k) != v]
        self.seen = {k: v for k, _, v in listing}  # deleted keys forgotten: a PUT again is new
        for key, size in new:
            event = s3_event(self.bucket, key, size, self.name)
            for attempt in range(ASYNC_RETRIES + 1):
                try:
                    self.results.append(self.function.invoke(event))
                    break
                except Exception:  # noqa: BLE001 - Lambda retries an async invocation; log it
                    log.exception("%s failed on %s (attempt %d)", self.name, key, attempt + 1)
            self.invocations += 1
        return len(new)
