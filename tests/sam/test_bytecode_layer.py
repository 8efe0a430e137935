"""The layer's bytecode (issue 15 item 1): the template wiring, and the checker sam_check.sh runs.

`.ci/sam_check.sh` builds both architectures and runs tests/sam/check_bytecode.py on them with
python3.12; here the checker itself is proven on a small layer compiled by this interpreter:
it passes a right one and names each kind of wrong one.
"""

from __future__ import annotations

import importlib.util
import marshal
import py_compile
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

sys.path.insert(0, str(Path(__file__).parent))
import check_bytecode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


def test_every_function_gets_the_bytecode_layer_after_the_code_layer(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "OutpostLayer"}, {"Ref": "OutpostBytecodeLayer"}]
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":  # its own Layers would be added to Globals'
            assert "Layers" not in resource.get("Properties", {}), logical_id


def test_the_bytecode_layer_is_built_by_layers_makefile_for_both_architectures(template: dict[str, Any]) -> None:
    layer = template["Resources"]["OutpostBytecodeLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile"}
    assert layer["Properties"]["ContentUri"] == "layers/"
    assert layer["Properties"]["CompatibleRuntimes"] == template["Resources"]["OutpostLayer"]["Properties"][
        "CompatibleRuntimes"] == ["python3.12"]
    assert sorted(layer["Properties"]["CompatibleArchitectures"]) == ["arm64", "x86_64"]
    makefile = (ROOT / "layers/Makefile").read_text()
    assert "\nbuild-OutpostBytecodeLayer:\n" in makefile
    assert "-r outpost/requirements.txt" in makefile and "--invalidation-mode checked-hash" in makefile
    assert "outpost.code_cache import CACHE, build" in makefile and "compiled-text.cpython-312.marshal" in makefile


def _build(root: Path, mode: py_compile.PycInvalidationMode = py_compile.PycInvalidationMode.CHECKED_HASH) -> Path:
    """A sam-like build: OutpostLayer/python with outpost/ and pydantic/ sources, and a bytecode
    layer holding only their .pyc, compiled for /opt/python like layers/Makefile does."""
    layer, bytecode = root / "OutpostLayer/python", root / "OutpostBytecodeLayer/python"
    for rel, text in {"outpost/__init__.py": "", "outpost/models.py": "X = 1\n",
                      "pydantic/__init__.py": "from .main import Y\n", "pydantic/main.py": "Y = 2\n"}.items():
        (layer / rel).parent.mkdir(parents=True, exist_ok=True)
        (layer / rel).write_text(text)
        pyc = bytecode / check_bytecode.pyc_for(Path(rel))
        pyc.parent.mkdir(parents=True, exist_ok=True)
        py_compile.compile(str(layer / rel), cfile=str(pyc), dfile=f"/opt/python/{rel}", invalidation_mode=mode,
                           doraise=True)
    cache = bytecode / check_bytecode.CODE_CACHE  # outpost/code_cache.py's file, as build() writes it
    cache.write_bytes(importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
                      + marshal.dumps({("eval", "int"): compile("int", "<string>", "eval")}))
    (layer / "pkg-1.0.data/scripts").mkdir(parents=True)
    (layer / "pkg-1.0.data/scripts/tool.py").write_text("print('a script, not a module')\n")
    return root


def test_the_checker_passes_a_complete_layer_and_the_interpreter_reads_every_pyc(tmp_path: Path) -> None:
    build = _build(tmp_path)
    layer, bytecode = build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python"
    assert check_bytecode.check_files(layer, bytecode) == []
    assert check_bytecode.check_imports(layer, bytecode, "import pydantic, outpost.models", least=4) == []
    assert check_bytecode.main(["check_bytecode.py", str(build)]) == 0


def test_the_checker_names_a_missing_pyc_and_the_import_compiling_that_module(tmp_path: Path) -> None:
    build = _build(tmp_path)
    layer, bytecode = build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python"
    (bytecode / check_bytecode.pyc_for(Path("pydantic/main.py"))).unlink()
    assert check_bytecode.check_files(layer, bytecode) == [
        "pydantic/main.py: no pydantic/__pycache__/" f"main.{sys.implementation.cache_tag}.pyc in the bytecode layer"]
    problems = check_bytecode.check_imports(layer, bytecode, "import pydantic, outpost.models", least=3)
    assert len(problems) == 1 and problems[0].startswith("compiled from source: ")
    assert problems[0].endswith("/pydantic/main.py")
    assert check_bytecode.main(["check_bytecode.py", str(build)]) == 1


def test_the_checker_refuses_bytecode_of_another_source(tmp_path: Path) -> None:
    build = _build(tmp_path)
    (build / "OutpostLayer/python/outpost/models.py").write_text("X = 'changed after compiling'\n")
    assert check_bytecode.check_files(build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python") == [
        f"outpost/__pycache__/models.{sys.implementation.cache_tag}.pyc: compiled from another source than the one"
        " it sits beside"]


def test_the_checker_refuses_timestamp_pycs_strays_and_a_build_without_the_layer(tmp_path: Path) -> None:
    build = _build(tmp_path / "a", py_compile.PycInvalidationMode.TIMESTAMP)
    problems = check_bytecode.check_files(build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python")
    assert len(problems) == 4 and all(p.endswith("timestamp-based (the zip keeps no source mtime Lambda could "
                                                 "match)") for p in problems)
    build = _build(tmp_path / "b")
    (build / "OutpostBytecodeLayer/python/outpost/models.py").write_text("X = 1\n")
    assert check_bytecode.check_files(build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python") == [
        "outpost/models.py: in the bytecode layer without a source beside it"]
    shutil.rmtree(build / "OutpostBytecodeLayer")
    assert check_bytecode.main(["check_bytecode.py", str(build)]) == 1


def test_the_checker_wants_the_code_cache_of_this_interpreter(tmp_path: Path) -> None:
    build = _build(tmp_path)
    layer, bytecode = build / "OutpostLayer/python", build / "OutpostBytecodeLayer/python"
    cache = bytecode / check_bytecode.CODE_CACHE
    cache.write_bytes(b"\0\0\r\n\0" + cache.read_bytes()[5:])
    assert check_bytecode.check_files(layer, bytecode) == [
        f"{check_bytecode.CODE_CACHE}: written by another interpreter"]
    cache.write_bytes(importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize]) + marshal.dumps({}))
    assert check_bytecode.check_files(layer, bytecode) == [f"{check_bytecode.CODE_CACHE}: holds no compiled text"]
    cache.unlink()
    assert check_bytecode.check_files(layer, bytecode) == [
        f"no {check_bytecode.CODE_CACHE} (outpost/code_cache.py) in the bytecode layer"]
