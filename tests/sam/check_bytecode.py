"""Prove a `sam build` output ships bytecode for every module of the Outpost layer.

sam's python3.12 workflow builds OutpostLayer without .pyc files; OutpostBytecodeLayer
(layers/Makefile) carries them, and Lambda merges both into /opt. Run with the python3.12 the
layer targets (the magic number and the source hash are that interpreter's):

    python3.12 tests/sam/check_bytecode.py .aws-sam/ci-x86_64/build [--import]

Fails unless:
  1. every module under OutpostLayer/python (each .py outside a wheel's *.data/ scripts) has its
     __pycache__/<name>.cpython-312.pyc in the bytecode layer, at the same relative path
     (outpost/ and pydantic/ are counted and must not be empty);
  2. each .pyc has this interpreter's magic number, is hash-based, carries the hash of the very
     source file beside it (importlib.util.source_hash), and names /opt/python/<path> as its file;
  3. the bytecode layer holds nothing else (no source, no shared object, no orphan .pyc) but
     outpost/code_cache.py's file of compiled texts, which this interpreter must have written;
  4. with --import (a build for this machine's architecture, whose .so files load): a fresh
     interpreter with both layers merged as in /opt, with PYTHONDONTWRITEBYTECODE=1, imports
     pydantic, outpost.models and outpost.api.routes reading every one of the layer's modules
     from its .pyc (python -v reports "matches") and compiling none from source.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

TAG = sys.implementation.cache_tag  # cpython-312 under python3.12
IMPORTS = "import pydantic, outpost.models, outpost.api.routes"
CODE_CACHE = Path("outpost/__pycache__") / f"compiled-text.{TAG}.marshal"  # outpost/code_cache.py CACHE


def pyc_for(rel: Path) -> Path:
    return rel.parent / "__pycache__" / f"{rel.stem}.{TAG}.pyc"


def check_pyc(pyc: Path, source: Path, opt_path: str) -> str | None:
    """None when `pyc` is valid bytecode of `source` for this interpreter, else what is wrong."""
    data = pyc.read_bytes()
    if data[:4] != importlib.util.MAGIC_NUMBER:
        return "another interpreter's magic number"
    flags = int.from_bytes(data[4:8], "little")
    if not flags & 0b1:
        return "timestamp-based (the zip keeps no source mtime Lambda could match)"
    if data[8:16] != importlib.util.source_hash(source.read_bytes()):
        return "compiled from another source than the one it sits beside"
    if marshal.loads(data[16:]).co_filename != opt_path:
        return f"names {marshal.loads(data[16:]).co_filename}, not {opt_path}"
    return None


def check_code_cache(path: Path) -> str | None:
    """None when `path` is a code_cache.py file this interpreter wrote, with code in it."""
    data, header = path.read_bytes(), importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
    if not data.startswith(header):
        return "written by another interpreter"
    codes = marshal.loads(data[len(header):])
    if not codes or not all(type(code).__name__ == "code" for code in codes.values()):
        return "holds no compiled text"
    return None


def check_files(layer: Path, bytecode: Path) -> list[str]:
    # Not modules: a wheel's *.data/ directory (scripts sam's workflow leaves unpacked) is no package.
    sources = sorted(rel for p in layer.rglob("*.py") if not (rel := p.relative_to(layer)).parts[0].endswith(".data"))
    count = Counter(rel.parts[0] for rel in sources)
    print(f"{layer}: {len(sources)} modules (outpost/ {count['outpost']}, pydantic/ {count['pydantic']})")
    problems = [f"no {top}/ modules in the layer" for top in ("outpost", "pydantic") if not count[top]]
    expected = set()
    for rel in sources:
        pyc = pyc_for(rel)
        expected.add(pyc)
        if not (bytecode / pyc).is_file():
            problems.append(f"{rel}: no {pyc} in the bytecode layer")
        elif why := check_pyc(bytecode / pyc, layer / rel, f"/opt/python/{rel}"):
            problems.append(f"{pyc}: {why}")
    expected.add(CODE_CACHE)
    if not (bytecode / CODE_CACHE).is_file():
        problems.append(f"no {CODE_CACHE} (outpost/code_cache.py) in the bytecode layer")
    elif why := check_code_cache(bytecode / CODE_CACHE):
        problems.append(f"{CODE_CACHE}: {why}")
    shipped = {p.relative_to(bytecode) for p in bytecode.rglob("*") if p.is_file()}
    problems += [f"{extra}: in the bytecode layer without a source beside it" for extra in sorted(shipped - expected)]
    print(f"{bytecode}: {len(shipped)} files, {len(shipped & expected)} of them the expected .pyc")
    return problems


def check_imports(layer: Path, bytecode: Path, imports: str = IMPORTS, least: int = 50) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "python"
        shutil.copytree(layer, opt)
        shutil.copytree(bytecode, opt, dirs_exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(opt), PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run([sys.executable, "-v", "-c", imports], env=env, capture_output=True, text=True)
        if out.returncode:
            return [f"{imports} failed: {out.stderr[-2000:]}"]
        lines = [line for line in out.stderr.splitlines() if str(opt) in line]
        from_pyc = [line for line in lines if line.startswith("# ") and " matches " in line]
        from_source = [line for line in lines if line.startswith("# code object from ") and line.endswith(".py")]
    print(f"{imports}: {len(from_pyc)} layer modules read from .pyc, {len(from_source)} compiled from source")
    problems = [f"compiled from source: {line}" for line in from_source]
    if len(from_pyc) < least:
        problems.append(f"only {len(from_pyc)} modules read from .pyc: the check proves too little")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[2:] not in ([], ["--import"]):
        print(__doc__, file=sys.stderr)
        return 2
    build = Path(argv[1])
    layer, bytecode = build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python"
    if not bytecode.is_dir():
        problems = [f"no bytecode layer at {bytecode}"]
    else:
        problems = check_files(layer, bytecode)
        if not problems and argv[2:]:
            problems = check_imports(layer, bytecode)
    for problem in problems[:50]:
        print("  " + problem)
    if len(problems) > 50:
        print(f"  ... and {len(problems) - 50} more")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
