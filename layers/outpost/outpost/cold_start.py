"""A handler's init (functions/*/app.py): imports and build with no garbage collection, and the
texts dataclasses and typing compile served from the bytecode layer (code_cache.py).

Issue 15 item 1. The send API's imports and build make some 120,000 tracked objects and leave
about 500 unreachable, so the ~130 collections they would trigger (10-15% of init) free almost
nothing. What init built lives as long as the process: gc.freeze() keeps it out of later
collections, so the first request does not pay the first full collection over it (30-45 ms of
the send API's first POST with the bytecode layer), and collection is back on for the requests,
also when init fails. bench/cold_start.py --built has the figures.
"""

from __future__ import annotations

import gc


class handler_init:  # noqa: N801  (used as a function: `with handler_init():`)
    """Imports nothing before collection is off (the hooks' module is imported inside)."""

    def __enter__(self) -> None:
        gc.disable()
        try:
            from .code_cache import install

            install()
        except BaseException:
            gc.enable()
            raise

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            gc.freeze()
        gc.enable()
