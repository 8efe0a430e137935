"""SnapStart's after-restore hooks (outpost/snapstart.py, bootstrap.forget_snapshot_state).

A snapshot is simulated as it happens: the app is built ("init"), then two processes are forked
from it ("two copies restored from one snapshot"), each runs the hooks (or not) and then does
what a restored copy does: draws retry jitter, opens a shaping lease, makes a message id, and
takes a token from an API key's bucket. One difference from a real restore is undone: CPython
re-seeds the random module in a forked child (os.register_at_fork), which a microVM restore
does not do, so each child first puts back the random state of the moment of the "snapshot".
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outpost import bootstrap, snapstart
from outpost.config import Settings
from outpost.delivery.backoff import delay_for_attempt
from outpost.delivery.shaping import Shaper, Slot
from outpost.ids import new_message_id
from tests.fakes.store import FakeMessages

KEY_HASH = "k" * 64


@pytest.fixture
def app_env(stacks_paused: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The API's settings as a deployed stack has them, with one token a key and a slow refill,
    # so a bucket drained at init stays drained in a copy that inherits it.
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "OUTPOST_API_RATE": "0.001",
                        "OUTPOST_API_BURST": "1"}.items():
        monkeypatch.setenv(name, value)
    bootstrap.reset()
    yield
    bootstrap.reset()


def _in_restored_copy(snapshot_random: Any, run_hooks: bool, work: Callable[[], dict]) -> dict:
    """Fork (a copy of the snapshot), run the hooks if asked, then `work`; its result as JSON."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: never returns into pytest
        code = 0
        try:
            random.setstate(snapshot_random)  # what fork's at-fork re-seed took away
            if run_hooks:
                snapstart.restore()
            os.write(w, json.dumps(work()).encode())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": repr(e)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def _two_restored_copies(run_hooks: bool) -> tuple[dict, dict]:
    app = bootstrap.api_app()  # init: what functions/send_api/app.py builds at import
    keys = app._request_validation_middleware.keys  # noqa: SLF001 - the Gate's KeyRing
    assert keys.buckets is not None
    assert keys.buckets.take(KEY_HASH) == 0.0  # a request during init drains the key's bucket
    shaper = Shaper(FakeMessages(), Settings(), clock=lambda: 1_700_000_000.0, rng=random.random,
                    count_by=lambda name, n, dims: None)
    snapshot = random.getstate()

    def work() -> dict:
        slot = asyncio.run(shaper.open("mx.example.test"))
        assert isinstance(slot, Slot)
        return {"jitter": delay_for_attempt(3, jitter=random.random()),  # DeliveryService.rng
                "shuffle": random.sample(range(1000), 5),  # the MX address shuffle's draws
                "lease_id": slot.lease_id, "message_id": new_message_id(),
                "wait": keys.buckets.take(KEY_HASH)}

    return (_in_restored_copy(snapshot, run_hooks, work), _in_restored_copy(snapshot, run_hooks, work))


def test_the_hooks_are_registered_at_import() -> None:
    assert bootstrap.forget_snapshot_state in snapstart.registered()


def test_restored_copies_with_the_hooks_draw_their_own_jitter_ids_leases_and_tokens(app_env: None) -> None:
    a, b = _two_restored_copies(run_hooks=True)
    assert a["jitter"] != b["jitter"] and a["shuffle"] != b["shuffle"]
    assert a["lease_id"] != b["lease_id"] and a["message_id"] != b["message_id"]
    # Each copy's token buckets are its own, full: the token init took is not charged again.
    assert a["wait"] == 0.0 and b["wait"] == 0.0


def test_without_the_hooks_restored_copies_share_jitter_and_rate_state(app_env: None) -> None:
    a, b = _two_restored_copies(run_hooks=False)
    # The same retry delays and the same MX order in every copy: the collision the hooks stop.
    assert a["jitter"] == b["jitter"] and a["shuffle"] == b["shuffle"]
    # And every copy inherits the snapshot's drained bucket: the key is refused everywhere.
    assert a["wait"] > 0 and b["wait"] > 0
    # Ids and lease ids need no hook: os.urandom / secrets are the kernel's, unique per copy.
    assert a["lease_id"] != b["lease_id"] and a["message_id"] != b["message_id"]


def test_forget_on_restore_holds_objects_weakly_and_runs_forget() -> None:
    calls: list[str] = []

    class Cache:
        def forget(self) -> None:
            calls.append("forgot")

    kept = snapstart.forget_on_restore(Cache())
    snapstart.forget_on_restore(Cache())  # dropped at once: not kept alive by the registry
    snapstart.restore()
    assert calls == ["forgot"] and kept is not None


def test_after_restore_registers_a_hook_once() -> None:
    ran: list[int] = []

    def hook() -> None:
        ran.append(1)

    try:
        snapstart.after_restore(hook)
        snapstart.after_restore(hook)
        snapstart.restore()
        assert ran == [1]
    finally:
        snapstart._after_restore.remove(hook)  # noqa: SLF001


def test_in_the_managed_runtime_the_hooks_are_registered_with_snapshot_restore_py(tmp_path: Any) -> None:
    # The runtime's module (python3.12+ with SnapStart) as its documentation gives it:
    # register_after_restore(func, *args, **kwargs). A fresh interpreter imports the layer's
    # bootstrap with it on the path, as functions/*/app.py do at init.
    (tmp_path / "snapshot_restore_py.py").write_text(
        "registered = []\n"
        "def register_after_restore(func, *args, **kwargs):\n    registered.append(func)\n    return func\n"
        "def register_before_snapshot(func, *args, **kwargs):\n    return func\n")
    code = ("import snapshot_restore_py, outpost.bootstrap\n"
            "print(sorted(f.__name__ for f in snapshot_restore_py.registered))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "['_forget_all', 'forget_snapshot_state']"
