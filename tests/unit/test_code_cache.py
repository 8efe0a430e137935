"""outpost/code_cache.py (issue 15 item 1): the texts dataclasses and typing compile at import,
served from a file built beforehand, give the very code compiling them gives.

Each case runs in fresh interpreters (the hooks are per process): one builds the file, one
imports with it installed, one without, and the classes' generated methods are compared code
object by code object.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("outpost.records", "outpost.config", "outpost.reputation", "outpost.models")

# What a module's classes are made of: each dataclass's generated methods (their code, compared
# field by field, nested code included), signatures and annotations, and the JSON schema of every
# pydantic model (which evaluates each string annotation through typing.ForwardRef).
FINGERPRINT = r"""
import dataclasses, importlib, inspect, json, sys, typing
from pathlib import Path
from outpost import code_cache
mode, modules = sys.argv[1], sys.argv[2].split(",")
if mode == "build":
    print(json.dumps({"written": code_cache.build(Path(sys.argv[3]), modules)}))
    raise SystemExit
loaded = code_cache.install(Path(sys.argv[3])) if mode == "cached" else 0
from pydantic import BaseModel

def code(c):
    return [c.co_name, c.co_qualname, c.co_filename, c.co_flags, c.co_argcount, c.co_kwonlyargcount,
            c.co_code.hex(), c.co_linetable.hex(), list(c.co_names), list(c.co_varnames),
            [code(k) if hasattr(k, "co_code") else repr(k) for k in c.co_consts]]

out = {}
for name in modules:
    module = importlib.import_module(name)
    for cls in vars(module).values():
        if not isinstance(cls, type) or cls.__module__ != name:
            continue
        if dataclasses.is_dataclass(cls):
            out[f"{name}.{cls.__qualname__}"] = {
                "signature": str(inspect.signature(cls)), "params": cls.__dataclass_params__.__repr__(),
                **{m: [code(f.__code__), repr(f.__annotations__), f.__qualname__]
                   for m in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")
                   if hasattr(f := cls.__dict__.get(m), "__code__")}}
        elif issubclass(cls, BaseModel) and cls is not BaseModel:
            out[f"{name}.{cls.__qualname__}"] = cls.model_json_schema()
ref = typing.ForwardRef("dict[str, list[int]] | None")
same = ref.__forward_code__ == compile("dict[str, list[int]] | None", "<string>", "eval", dont_inherit=True)
print(json.dumps({"loaded": loaded, "stats": code_cache.stats, "classes": out, "forward_ref_same": same,
                  "hooked": "exec" in vars(dataclasses) and "compile" in vars(typing)}))
"""


def _run(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", FINGERPRINT, *args], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_the_cached_code_is_the_code_compiling_gives(tmp_path: Path) -> None:
    cache, modules = tmp_path / "cache.marshal", ",".join(MODULES)
    written = _run("build", modules, str(cache))["written"]
    assert written > 300  # records.py alone has ~20 frozen dataclasses of 6 methods each
    cached, plain = _run("cached", modules, str(cache)), _run("plain", modules, str(cache))
    assert cached["loaded"] == written and cached["hooked"] and not plain["hooked"]
    # misses: texts the build never met (the schema builds below, the probe's own ForwardRef)
    assert cached["stats"]["hits"] >= written and cached["stats"]["misses"] <= 10
    assert len(cached["classes"]) > 40 and "outpost.records.Message" in cached["classes"]
    assert "outpost.models.SendRequest" in cached["classes"]
    assert cached["classes"] == plain["classes"]
    assert cached["forward_ref_same"] and plain["forward_ref_same"]


NEW_CLASS = r"""
import dataclasses, json, sys
from pathlib import Path
from outpost import code_cache
loaded = code_cache.install(Path(sys.argv[1]))
before = dict(code_cache.stats)

@dataclasses.dataclass(frozen=True)
class Point:  # not in the file: compiled here, as dataclasses would
    x: int
    y: "list[str] | None" = None

p = Point(1)
try:
    p.x = 2
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
print(json.dumps({"loaded": loaded, "before": before, "after": code_cache.stats, "repr": repr(p),
                  "eq": p == Point(1) and p != Point(2), "hash": hash(p) == hash(Point(1)), "frozen": frozen,
                  "annotations": repr(Point.__init__.__annotations__)}))
"""


def _new_class(cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", NEW_CLASS, str(cache)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_text_not_in_the_file_is_compiled_as_dataclasses_compiles_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache.marshal"
    cache.write_bytes(importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
                      + marshal.dumps({("eval", "int"): compile("int", "<string>", "eval")}))
    seen = _new_class(cache)
    assert seen["loaded"] == 1
    assert seen["after"]["misses"] - seen["before"]["misses"] == 6  # __init__, __repr__, __eq__, __hash__, set/del
    assert seen["repr"] == "Point(x=1, y=None)" and seen["eq"] and seen["hash"] and seen["frozen"]
    # No future flag leaks from code_cache.py (it has `from __future__ import annotations`): the
    # generated __init__'s annotations are the evaluated types, as without the cache.
    assert seen["annotations"] == "{'x': <class 'int'>, 'y': 'list[str] | None', 'return': None}"


def test_a_missing_file_or_another_interpreters_hooks_nothing(tmp_path: Path) -> None:
    seen = _new_class(tmp_path / "absent.marshal")
    assert seen["loaded"] == 0 and seen["after"] == {"hits": 0, "misses": 0}  # not hooked: nothing counted
    other = tmp_path / "other.marshal"
    other.write_bytes(b"\x00\x00\r\n" + bytes([sys.flags.optimize]) + marshal.dumps({}))  # another magic number
    seen = _new_class(other)
    assert seen["loaded"] == 0 and seen["after"] == {"hits": 0, "misses": 0}
    assert seen["repr"] == "Point(x=1, y=None)" and seen["frozen"]


def test_every_module_the_layer_build_records_imports() -> None:
    """layers/Makefile builds the file from MODULES: a module renamed or gone would only print a
    warning there (and leave its texts to be compiled at run time), so it is caught here."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/outpost"), os.environ.get("PYTHONPATH", "")]))
    code = ("import sys, tempfile, pathlib; from outpost import code_cache; "
            "print(code_cache.build(pathlib.Path(tempfile.mkdtemp()) / 'c.marshal'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "not imported" not in out.stderr, out.stderr
    assert int(out.stdout) > 500
