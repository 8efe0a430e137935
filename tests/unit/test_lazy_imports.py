"""outpost.lazy_imports: a package's re-exports loaded name by name, and nothing else changed.

Each test writes a small package to a temporary directory and imports it in a fresh
interpreter, so the import system's real state (sys.modules, parent attributes) is what is
checked, never this process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outpost.lazy_imports import reexports

ROOT = Path(__file__).resolve().parents[2]

INIT = '''"""A package that re-exports."""

from .heavy import Heavy
from .light import Light, helper as assist
from pkg_under_test.other import Other

__all__ = ["Heavy", "Light", "assist", "Other"]
'''


def _package(tmp: Path, init: str = INIT) -> Path:
    pkg = tmp / "pkg_under_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(init)
    (pkg / "heavy.py").write_text("import sys\nsys.modules['heavy_marker'] = sys\nclass Heavy: pass\n")
    (pkg / "light.py").write_text("class Light: pass\ndef helper(): return 7\n")
    (pkg / "other.py").write_text("class Other: pass\n")
    (pkg / "extra.py").write_text("VALUE = 3\n")  # a submodule the __init__ does not re-export
    return tmp


def _run(path: Path, code: str) -> dict:
    prelude = "import json, sys\nfrom outpost.lazy_imports import defer_reexports\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT / "layers/outpost")]))
    out = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_name_imports_only_its_own_submodule(tmp_path: Path) -> None:
    seen = _run(_package(tmp_path), """
deferred = defer_reexports("pkg_under_test")
from pkg_under_test import Light, assist
import pkg_under_test
print(json.dumps({"deferred": deferred, "light": Light.__module__, "assist": assist(),
                  "heavy_loaded": "pkg_under_test.heavy" in sys.modules, "marker": "heavy_marker" in sys.modules,
                  "other_loaded": "pkg_under_test.other" in sys.modules,
                  "same": sys.modules["pkg_under_test"] is pkg_under_test}))
""")
    assert seen == {"deferred": True, "light": "pkg_under_test.light", "assist": 7, "heavy_loaded": False,
                    "marker": False, "other_loaded": False, "same": True}


def test_submodules_import_as_before_and_any_other_name_runs_the_real_init(tmp_path: Path) -> None:
    seen = _run(_package(tmp_path), """
defer_reexports("pkg_under_test")
from pkg_under_test import extra  # a submodule the __init__ does not name
import pkg_under_test.other as other_mod
before = "pkg_under_test.heavy" in sys.modules
pkg_under_test = sys.modules["pkg_under_test"]
all_ = pkg_under_test.__all__  # not a re-export: the real __init__ runs, once
print(json.dumps({"extra": extra.VALUE, "other": other_mod.Other.__name__, "heavy_before": before,
                  "all": all_, "heavy_after": "pkg_under_test.heavy" in sys.modules,
                  "getattr_gone": "__getattr__" not in vars(pkg_under_test),
                  "heavy": pkg_under_test.Heavy.__module__}))
""")
    assert seen == {"extra": 3, "other": "Other", "heavy_before": False,
                    "all": ["Heavy", "Light", "assist", "Other"], "heavy_after": True, "getattr_gone": True,
                    "heavy": "pkg_under_test.heavy"}


def test_a_missing_name_is_still_an_attribute_error(tmp_path: Path) -> None:
    seen = _run(_package(tmp_path), """
defer_reexports("pkg_under_test")
try:
    from pkg_under_test import Nothing
    raised = None
except ImportError as exc:
    raised = type(exc).__name__
print(json.dumps({"raised": raised}))
""")
    assert seen == {"raised": "ImportError"}


@pytest.mark.parametrize("statement", ["print('side effect')", "import os", "from .light import *",
                                       "X = compute()", "if True:\n    from .light import Light"])
def test_an_init_that_does_more_than_reexport_is_not_read_as_reexports(statement: str) -> None:
    assert reexports(INIT + statement + "\n", "pkg_under_test") is None


def test_such_an_init_is_imported_as_usual(tmp_path: Path) -> None:
    seen = _run(_package(tmp_path, INIT + "import os\n"), """
print(json.dumps({"deferred": defer_reexports("pkg_under_test"), "loaded": "pkg_under_test" in sys.modules}))
""")
    assert seen == {"deferred": False, "loaded": False}


def test_the_map_is_read_from_the_init() -> None:
    assert reexports(INIT, "pkg_under_test") == {
        "Heavy": ("pkg_under_test.heavy", "Heavy"), "Light": ("pkg_under_test.light", "Light"),
        "assist": ("pkg_under_test.light", "helper"), "Other": ("pkg_under_test.other", "Other")}
    assert reexports('"""doc"""\nfrom . import sub\n', "p") == {"sub": ("p.sub", "")}


def test_an_imported_package_is_left_alone(tmp_path: Path) -> None:
    seen = _run(_package(tmp_path), """
import pkg_under_test
print(json.dumps({"deferred": defer_reexports("pkg_under_test"), "heavy": "pkg_under_test.heavy" in sys.modules}))
""")
    assert seen == {"deferred": False, "heavy": True}
