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


def main(argv: list[str] | None = None) -> None:
    patch_sqs()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
