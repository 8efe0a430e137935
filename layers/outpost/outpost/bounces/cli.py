"""``outpost-bounce``: batch bounce parsing for scripts and for the scorer.

Contract (fixed): read absolute file paths on stdin, one per line, until EOF; print one
JSON object per input line, in input order, flushed per line:
``{"path": ..., "recipients": [{"address", "status", "action", "kind", "reason",
"diagnostic"}]}``; a non-bounce gives ``"recipients": []``; an unreadable file adds
``"error"``.  It never crashes and never skips a line.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from outpost.bounces.dsn import parse_bounce


def result_for(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"path": path, "recipients": []}
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except Exception as exc:  # missing, unreadable, a directory, a bad name...
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    report = parse_bounce(raw)
    out["recipients"] = [
        {"address": r.address, "status": r.status, "action": r.action, "kind": r.kind,
         "reason": r.reason, "diagnostic": r.diagnostic}
        for r in report.recipients
    ]
    return out


def run(stdin: IO[str], stdout: IO[str]) -> int:
    for line in stdin:
        path = line.rstrip("\r\n")
        try:
            obj = result_for(path)
        except Exception as exc:  # belt and braces: one bad input never ends the batch
            obj = {"path": path, "recipients": [], "error": f"{type(exc).__name__}: {exc}"}
        try:
            stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        except UnicodeEncodeError:  # a lone surrogate that cannot be written raw
            stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")
        stdout.flush()
    return 0


def main() -> int:
    # Paths are bytes on POSIX; surrogateescape keeps odd names round-trippable.
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", closefd=False)
    stdout = open(sys.stdout.fileno(), "w", encoding="utf-8", errors="surrogateescape",
                  closefd=False)
    return run(stdin, stdout)


if __name__ == "__main__":
    raise SystemExit(main())
