"""Lambda SnapStart runtime hooks: one small registry in front of the runtime's own.

With SnapStart a function version's initialised process is snapshotted once and every new
execution environment is *restored* from that snapshot, so whatever init made (the random
module's state, token buckets, cached keys and credentials, pooled connections) is shared by
every restored copy. `after_restore` functions undo that; they are registered with the managed
runtime's `snapshot_restore_py` (python3.12+ with SnapStart) when it is importable, and kept
in a local list either way so that tests and the local stack can run them with `restore()`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

Hook = Callable[[], None]


class Forgetful(Protocol):
    def forget(self) -> None:
        """Drop the state this copy must not share with others restored from its snapshot."""


F = TypeVar("F", bound=Forgetful)

try:  # present only in the managed runtime (AWS docs: "Lambda SnapStart runtime hooks for Python")
    from snapshot_restore_py import register_after_restore as _runtime_after_restore  # type: ignore[import-not-found]
except ImportError:  # locally, in tests, in the SMTP submission image
    _runtime_after_restore = None

_after_restore: list[Hook] = []
# Objects whose forget() runs after the hooks; weak, so the test's rebuilt apps do not pile up.
_forgetful: weakref.WeakSet[Forgetful] = weakref.WeakSet()


def after_restore(hook: Hook) -> Hook:
    """Run `hook` in every execution environment restored from a snapshot (a decorator).
    Idempotent per function, so a module imported twice registers once."""
    if hook in _after_restore:
        return hook
    _after_restore.append(hook)
    if _runtime_after_restore is not None:
        _runtime_after_restore(hook)
    return hook


def restore() -> None:
    """Run the registered hooks in order, as the runtime does after a restore."""
    for hook in list(_after_restore):
        hook()


def forget_on_restore(obj: F) -> F:
    """`obj.forget()` runs after every restore (per-key token buckets, cached keys, cached
    states: state init may have made that one copy must not inherit). Returns `obj`."""
    _forgetful.add(obj)
    return obj


@after_restore
def _forget_all() -> None:
    for obj in list(_forgetful):
        obj.forget()


def registered() -> tuple[Hook, ...]:
    return tuple(_after_restore)
