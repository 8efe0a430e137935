"""Only the store knows the DynamoDB layout: no other library or function module names a key
attribute, an index, or a key prefix (issue 9 item 1; STYLE.md "Records have one shape").

Every string literal of every module under layers/outpost/outpost and functions/ except
store.py is read with `ast` (docstrings excepted: they may describe the layout), including
the literal parts of f-strings, so `f"MSG#{id}"` counts as well as `"gsi3pk"`.

The API keys table's key, `key_hash`, is a layout name like the others (the ApiKey record has
the field, but only the store spells it as a string). The domains table's key, `domain`, is
also a word of the public API (answers, errors' `field`, log keys, the DKIM secret), so it
counts only where code reads, writes or names a domains item with it: `x.get("domain")`, a
dict display beside `"verified"` passed to a call (`table.put({"domain": d, "verified":
True})`), or a positional argument of a call with others (how a table adapter is told its
key: `KeyValueTable(ddb, name, "domain")`).

Not in the list, on purpose: attribute names that are also record fields in the public API
(`address`, `type`, `source`, `created_at`, `received_at`), which the small tables and the
GSIs reuse as keys. admin/outpost_admin is held to the same rule as the library.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from textwrap import indent

ROOT = Path(__file__).resolve().parents[2]
KEY_NAMES = {"pk", "sk", "due_shard", "due_at", "by_source", "key_hash",
             *(f"gsi{n}" for n in range(1, 10)),
             *(f"gsi{n}{k}" for n in range(1, 10) for k in ("pk", "sk"))}
KEY_PREFIXES = ("MSG#", "RCPT#", "BOUNCE#", "DAY#", "SUPPRESSION#", "INBOUND#", "UPLOAD#",
                "UPLOADS#", "STS#", "EVENT#", "DUE#", "SLOW#", "REP#")
DOMAINS_KEY = "domain"
ALLOWED = {Path("layers/outpost/outpost/store.py")}


def modules(root: Path) -> Iterator[Path]:
    for top in ("layers/outpost/outpost", "functions", "admin/outpost_admin"):
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


def _is(node: ast.AST | None, value: str) -> bool:
    return isinstance(node, ast.Constant) and node.value == value


def _domains_key_uses(tree: ast.AST) -> Iterator[ast.Constant]:
    """The domains table's key used as one: read from an item, written in a domains item, or
    passed as a table's key name."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args \
                and _is(node.args[0], DOMAINS_KEY):
            yield node.args[0]  # type: ignore[misc]
        elif len(node.args) >= 2:
            yield from (a for a in node.args if _is(a, DOMAINS_KEY))  # type: ignore[misc]
        for arg in node.args:
            if isinstance(arg, ast.Dict) and any(_is(k, "verified") for k in arg.keys):
                yield from (k for k in arg.keys if _is(k, DOMAINS_KEY))  # type: ignore[misc]


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
    found.extend(f"{node.lineno}: {node.value!r}" for node in _domains_key_uses(tree))
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
    (tmp_path / "admin/outpost_admin").mkdir(parents=True)
    mod.write_text('"""pk=MSG#<id> sk=META"""\n'
                   'def f(day, mid):\n'
                   '    return {"gsi3pk": f"DAY#{day}", "x": mid.split("#")}, "pk"\n')
    assert {k: sorted(v) for k, v in scan(tmp_path).items()} == {"layers/outpost/outpost/api/leaky.py": [
        "3: 'DAY#'", "3: 'gsi3pk'", "3: 'pk'"]}


def test_the_small_tables_keys_are_caught_and_the_word_domain_elsewhere_is_not(tmp_path: Path) -> None:
    # The API keys and domains tables: their key names as the old code used them are caught
    # (in the admin CLI too); "domain" as an answer field, an error field, a log key, a DKIM
    # secret's field or a CLI argument is not.
    lib = tmp_path / "layers/outpost/outpost/api"
    lib.mkdir(parents=True)
    (tmp_path / "functions").mkdir()
    admin = tmp_path / "admin/outpost_admin"
    admin.mkdir(parents=True)
    (lib / "keys.py").write_text(
        'def f(table, item, name, h):\n'
        '    table.update(item["key_hash"], {"revoked_at": 1})\n'
        '    table.put({"domain": name, "verified": False})\n'
        '    return KeyValueTable(None, "t", "domain"), item.get("domain")\n')
    (lib / "fine.py").write_text(
        'def g(name, log, secret):\n'
        '    log.warning("x", extra={"domain": name})\n'
        '    keys_from_secret({"domain": name, "keys": []})\n'
        '    raise NotFoundError("no", field="domain") from ValueError(secret["domain"])\n'
        'VIEW = {"domain": "a.test", "verified": True, "records": []}\n')
    (admin / "cli.py").write_text('def h(p, k):\n    p.add_argument("domain")\n    return k["key_hash"]\n')
    assert {k: sorted(v) for k, v in scan(tmp_path).items()} == {
        "admin/outpost_admin/cli.py": ["3: 'key_hash'"],
        "layers/outpost/outpost/api/keys.py": ["2: 'key_hash'", "3: 'domain'", "4: 'domain'", "4: 'domain'"]}


# ---- no function over 60 lines (issue 9 item 10) -------------------------------------------------
MAX_LINES = 60
# Each exception, and why. An entry whose function has come down to MAX_LINES fails the test
# too (below): take it off the list then, so the list stays the true list of debts.
LONG_ALLOWED: dict[tuple[str, str], str] = {}


def long_functions(root: Path) -> dict[tuple[str, str], int]:
    """(module, qualified name) -> lines, for every function (nested ones too, methods by
    class) in layers/outpost/outpost and functions/ longer than MAX_LINES, decorators and
    docstring included."""
    found: dict[tuple[str, str], int] = {}

    def visit(node: ast.AST, prefix: str, module: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                lines = (child.end_lineno or child.lineno) - first + 1
                if lines > MAX_LINES:
                    found[(module, name)] = lines
                visit(child, name + ".", module)
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".", module)
            else:
                visit(child, prefix, module)

    for top in ("layers/outpost/outpost", "functions"):
        for path in sorted((root / top).rglob("*.py")):
            visit(ast.parse(path.read_text(), str(path)), "", str(path.relative_to(root)))
    return found


def test_no_function_is_longer_than_60_lines_but_the_listed_exceptions() -> None:
    found = long_functions(ROOT)
    assert {k: v for k, v in found.items() if k not in LONG_ALLOWED} == {}
    stale = sorted(k for k in LONG_ALLOWED if k not in found)
    assert stale == [], f"no longer over {MAX_LINES} lines: take these off LONG_ALLOWED"


def test_the_length_scan_finds_functions_methods_and_nested_ones(tmp_path: Path) -> None:
    mod = tmp_path / "functions/x/app.py"
    mod.parent.mkdir(parents=True)
    (tmp_path / "layers/outpost/outpost").mkdir(parents=True)
    body = "x = 1\n" * MAX_LINES
    mod.write_text("def short():\n" + indent("x = 1\n", "    ")
                   + "def long():\n" + indent(body, "    ")
                   + "class C:\n    @staticmethod\n    async def m():\n" + indent(body, "        ")
                   + "def outer():\n    def inner():\n" + indent(body, "        "))
    assert long_functions(tmp_path) == {("functions/x/app.py", "long"): MAX_LINES + 1,
                                        ("functions/x/app.py", "C.m"): MAX_LINES + 2,
                                        ("functions/x/app.py", "outer"): MAX_LINES + 2,
                                        ("functions/x/app.py", "outer.inner"): MAX_LINES + 1}
