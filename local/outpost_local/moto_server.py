"""moto's server with its SQS queue mutations serialised: `python -m outpost_local.moto_server -H host -p port`.

Stock moto (5.x) keeps a queue's messages in a list guarded by a lock that only `add_message`
takes. `Queue.delete_message` rebuilds the list without it (`self._messages = new_messages`),
so a message appended while a delete is copying the list is silently dropped: a job the API
answered 202 for is gone. Two concurrent ReceiveMessage calls can also both hand out the same
message (a fake duplicate), and a redrive to the dead-letter queue removes from the list
unlocked. The server runs threaded (werkzeug), so every concurrent client can hit these.

`patch_sqs()` makes every mutation of a queue's message list take that queue's own lock
(a `threading.Condition` over an `RLock`, so re-entry is fine and a long poll's wait still
releases it). It changes no behaviour other than the interleaving; the local stack and the
test rigs start moto through this module, never the stock `moto.server`.

`patch_s3()` gives each S3 object its own LastModified, listed to the microsecond (the local S3
notifications tell an overwrite with the same bytes by it).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

_PATCHED = "_outpost_serialised"


def _under_queue_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """For Queue methods: run with `self._messages_lock` held."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._messages_lock:
            return method(self, *args, **kwargs)
    return wrapper


def _under_named_queue_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """For SQSBackend methods whose first argument is a queue name: hold that queue's lock.
    ReceiveMessage's long poll waits on the same Condition, and Condition.wait releases an
    RLock completely, so other clients still get in while it waits."""
    @functools.wraps(method)
    def wrapper(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            return method(self, queue_name, *args, **kwargs)
    return wrapper


def patch_sqs() -> None:
    """Serialise moto's SQS message-list mutations per queue (idempotent)."""
    from moto.sqs import models

    if getattr(models.Queue, _PATCHED, False):
        return
    models.Queue.delete_message = _under_queue_lock(models.Queue.delete_message)  # type: ignore[method-assign]
    models.Queue.add_message = _under_queue_lock(models.Queue.add_message)  # type: ignore[method-assign]
    for name in ("receive_message", "change_message_visibility", "purge_queue"):
        setattr(models.SQSBackend, name, _under_named_queue_lock(getattr(models.SQSBackend, name)))
    setattr(models.Queue, _PATCHED, True)


def patch_s3() -> None:
    """Each S3 object moto makes (a PUT, a copy, a completed upload) gets its own LastModified,
    listed to the microsecond (idempotent). Stock moto lists it to the second (`.000Z`), so an
    object overwritten with the same bytes within one second listed exactly as before, and the
    local S3 notifications (s3events.py: a new ETag or LastModified is a new PUT) missed it
    (s17d). The stamp only moves forward: two PUTs never share one, even within a microsecond.
    HeadObject's Last-Modified (RFC 1123, seconds) and conditional reads are unchanged."""
    import datetime
    import threading

    from moto.core import serialize
    from moto.s3 import models

    if getattr(models.FakeKey, _PATCHED, False):
        return
    lock = threading.Lock()
    last = [datetime.datetime.min]
    init = models.FakeKey.__init__

    @functools.wraps(init)
    def stamped(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        with lock:
            last[0] = max(self.last_modified, last[0] + datetime.timedelta(microseconds=1))
            self.last_modified = last[0]

    models.FakeKey.__init__ = stamped  # type: ignore[method-assign]
    models.FakeKey.last_modified_ISO8601 = property(  # type: ignore[method-assign, assignment]
        lambda self: self.last_modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    # S3's XML answers wrote every time as `.000Z`; ISO 8601 keeps the microseconds given.
    serialize.S3Serializer.DEFAULT_TIMESTAMP_FORMAT = serialize.TimestampSerializer.TIMESTAMP_FORMAT_ISO8601
    setattr(models.FakeKey, _PATCHED, True)


def main(argv: list[str] | None = None) -> None:
    patch_sqs()
    patch_s3()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
