"""Only the store knows the DynamoDB layout: no other library or function module names a key
attribute, an index, or a key prefix (issue 9 item 1; STYLE.md "Records have one shape").

Every string literal of every module under layers/outpost/outpost and functions/ except
store.py is read with `ast` (docstrings excepted: they may describe the layout), including
the literal parts of f-strings, so `f"MSG#{id}"` counts as well as `"gsi3pk"`.

Not in the list, on purpose: attribute names that are also record fields in the public API
(`address`, `type`, `source`, `created_at`, `received_at`), which the small tables and the
GSIs reuse as keys; and the API-keys and domains tables' keys (`key_hash`, `domain`), whose
records are not typed yet (see the issue 9 note).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_NAMES = {"pk", "sk", "due_shard", "due_at", "by_source",
             *(f"gsi{n}" for n in range(1, 10)),
             *(f"gsi{n}{k}" for n in range(1, 10) for k in ("pk", "sk"))}
KEY_PREFIXES = ("MSG#", "RCPT#", "BOUNCE#", "DAY#", "SUPPRESSION#", "INBOUND#", "UPLOAD#",
                "UPLOADS#", "STS#", "EVENT#", "DUE#")
ALLOWED = {Path("layers/outpost/outpost/store.py")}


def modules(root: Path) -> Iterator[Path]:
    for top in ("layers/outpost/outpost", "functions"):
        for path in sorted((root / top).rglob("*.py")):
            if path.relative_to(root) not in ALLOWED:
                yield path


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def layout_names(path: Path) -> list[str]:
    """Where `path` names a key, an index or a key prefix: `line: literal` for each."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            v = node.value
            if v in KEY_NAMES or v.startswith(KEY_PREFIXES):
                found.append(f"{node.lineno}: {v!r}")
    return found


def scan(root: Path) -> dict[str, list[str]]:
    out = {}
    for path in modules(root):
        names = layout_names(path)
        if names:
            out[str(path.relative_to(root))] = names
    return out


def test_no_module_but_the_store_knows_a_key_or_index_name() -> None:
    assert scan(ROOT) == {}


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    # The scan itself: a module that builds a key the old way is caught, a docstring is not.
    mod = tmp_path / "layers/outpost/outpost/api/leaky.py"
    mod.parent.mkdir(parents=True)
    (tmp_path / "functions").mkdir()
    mod.write_text('"""pk=MSG#<id> sk=META"""\n'
                   'def f(day, mid):\n'
                   '    return {"gsi3pk": f"DAY#{day}", "x": mid.split("#")}, "pk"\n')
    assert {k: sorted(v) for k, v in scan(tmp_path).items()} == {"layers/outpost/outpost/api/leaky.py": [
        "3: 'DAY#'", "3: 'gsi3pk'", "3: 'pk'"]}
