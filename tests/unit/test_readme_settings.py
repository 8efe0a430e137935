"""Issue 9, item 11: the README's settings table names every OUTPOST_* variable the library
reads (config.py), and names none that nothing reads any more."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bOUTPOST_[A-Z0-9_]+\b")


def _section() -> str:
    """The README's "### Settings", up to the next heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n### Settings\n") + 1
    end = re.compile(r"^#", re.MULTILINE).search(text, start + 1)
    return text[start:end.start() if end else len(text)]


def _readme_table() -> set[str]:
    """The names in the first column of the README's settings tables."""
    return {m.group(1) for m in re.finditer(r"^\| `(OUTPOST_[A-Z0-9_]+)` \|", _section(), re.MULTILINE)}


def _read_by(path: Path) -> set[str]:
    """Names appearing as string literals in a Python file (what os.environ.get is called with)."""
    return set(re.findall(r"[\"'](OUTPOST_[A-Z0-9_]+)[\"']", path.read_text()))


def test_every_setting_config_reads_is_in_the_readme_table() -> None:
    read = _read_by(ROOT / "layers" / "outpost" / "outpost" / "config.py")
    assert len(read) > 20  # the parse found config.py's names, not nothing
    missing = read - _readme_table()
    assert not missing, f"add these to the README's Settings table: {sorted(missing)}"


def test_the_readme_table_names_no_setting_that_nothing_reads() -> None:
    code = set()
    for folder in ("layers", "functions", "local", "admin", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            code |= _read_by(path)
    stale = _readme_table() - code
    assert not stale, f"the README's Settings table names variables nothing reads: {sorted(stale)}"


def test_the_table_parse_sees_every_row() -> None:
    table = _readme_table()
    assert {"OUTPOST_MESSAGES_TABLE", "OUTPOST_DNS_SERVERS", "OUTPOST_DYNAMODB_ENGINE"} <= table
    assert len(table) > 30
    # Every name written anywhere in the section is a row, not just mentioned in prose.
    assert set(NAME.findall(_section())) == table
