"""Issue 8, item 29: the layer and the dev environment are built from hash-locked files.

`.ci/sam_check.sh` proves `sam build` installs the layer lock for arm64 and x86_64 (pip in
hash-checking mode refuses a file whose hash is not listed); these tests keep the lock files
honest: every requirement pinned and hashed, every direct dependency locked, and the layer
shipping the versions the tests run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER_IN = ROOT / "layers/outpost/requirements.in"
LAYER_LOCK = ROOT / "layers/outpost/requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of a pip requirements file in uv/pip-compile format."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec = line.split(";")[0].split("--hash")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s]+)", spec)
        assert m, f"{path.name}: not pinned with ==: {line[:80]}"
        out[_norm(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def _direct(lines: list[str]) -> set[str]:
    return {_norm(m.group(1)) for x in lines if (m := _NAME.match(x.strip())) and not x.strip().startswith("#")}


def test_the_layer_lock_pins_and_hashes_everything() -> None:
    lock = _requirements(LAYER_LOCK)
    assert lock, "empty layer lock"
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no hash"
    assert _direct(LAYER_IN.read_text().splitlines()) <= set(lock)
    # Compiled wheels: a universal lock lists every file's hash, so both Lambda architectures
    # find theirs (one hash per platform and Python version at least).
    for native in ("pydantic-core", "cryptography", "cffi"):
        assert len(lock[native][1]) >= 10, native


def test_the_dev_lock_pins_and_hashes_everything() -> None:
    lock = _requirements(DEV_LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _direct(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert wanted <= set(lock), wanted - set(lock)
    assert all(hashes for _, hashes in lock.values())


def test_the_layer_ships_what_the_tests_run() -> None:
    layer, dev = _requirements(LAYER_LOCK), _requirements(DEV_LOCK)
    differ = {n: (v, dev[n][0]) for n, (v, _) in layer.items() if n in dev and dev[n][0] != v}
    assert not differ, f"layer vs dev versions differ: {differ} (run make lock)"
    # And the layer and pyproject list the same runtime packages (boto3 comes with Lambda).
    runtime = _direct(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert _direct(LAYER_IN.read_text().splitlines()) == runtime - {"boto3"}
