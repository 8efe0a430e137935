"""Packages whose __init__ re-exports far more than we use, loaded one name at a time.

Importing a submodule runs its package's __init__ first. Powertools' `event_handler/__init__.py`
imports every resolver (AppSync's pulls in asyncio; Bedrock, VPC Lattice, Lambda URLs) and
`utilities/data_classes/__init__.py` some 30 event modules, while the send API uses one
resolver and the event classes that resolver names: about 25 ms of its cold start (issue 15).

`defer_reexports(package)` registers the package's module without running its __init__ and
gives it a module `__getattr__` (PEP 562) that, on first access to a name, imports only the
submodule the __init__ would have taken it from. Which submodule is read from the __init__'s
own `from x import Name` lines, so nothing is listed by hand and an upgrade cannot leave a
stale list. Behaviour is kept: a submodule is still imported by the import system; any other
name (or a dunder such as `__all__`) runs the real __init__ in place, after which the package
is exactly what a plain import makes it. An __init__ that does anything but import, declare
`__all__` and carry a docstring is not deferred at all.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

_lock = threading.RLock()


def defer_reexports(package: str) -> bool:
    """Defer `package`'s __init__ (see the module docstring). False, and nothing changed, if the
    package is already imported or its __init__ is not made of re-exports only."""
    if package in sys.modules:
        return False
    spec = importlib.util.find_spec(package)  # imports the parent packages (they are needed)
    if spec is None or spec.loader is None or spec.origin is None or not spec.submodule_search_locations:
        return False
    exports = reexports(Path(spec.origin).read_text(encoding="utf-8"), package)
    if exports is None:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = _loader(module, exports)  # type: ignore[method-assign]
    sys.modules[package] = module
    parent, _, child = package.rpartition(".")
    if parent:  # what the import system does after loading a submodule
        setattr(sys.modules[parent], child, module)
    return True


def reexports(source: str, package: str) -> dict[str, tuple[str, str]] | None:
    """{exported name: (module, name there)} from an __init__'s source; None if the __init__
    does anything else than re-export (so deferring it could change what it does)."""
    out: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        if not isinstance(node, ast.ImportFrom) or any(a.name == "*" for a in node.names):
            return None
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        for alias in node.names:
            if base == package:  # `from . import sub`: the submodule itself
                out[alias.asname or alias.name] = (f"{package}.{alias.name}", "")
            else:
                out[alias.asname or alias.name] = (base, alias.name)
    return out


def _loader(module: ModuleType, exports: dict[str, tuple[str, str]]) -> Any:
    package = module.__name__

    def __getattr__(name: str) -> Any:  # noqa: N807  (PEP 562's name)
        if name in exports:
            # No lock of ours around an import: the import system's per-module locks make this
            # thread-safe, and a second lock could deadlock against them. Binding twice is harmless.
            source, attr = exports[name]
            target = importlib.import_module(source)
            value = getattr(target, attr) if attr else target
            setattr(module, name, value)
            return value
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            # a submodule not re-exported (`from package import content_types`): the import
            # system imports it when the attribute is missing
            raise AttributeError(name)
        with _lock:  # anything else: the real __init__, once (never on the API's path)
            if "__getattr__" in module.__dict__:
                del module.__getattr__
                module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
        return getattr(module, name)

    return __getattr__
