"""The outpost-bounce console entry, run as a real process with the fixed batch contract:
absolute paths on stdin, one JSON object per line on stdout, in order, flushed per line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "bounces"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    extra = os.pathsep.join([str(ROOT / "layers" / "outpost"), str(ROOT / "local")])
    env["PYTHONPATH"] = extra + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(stdin: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "outpost.bounces.cli"], input=stdin,
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_batch_contract(tmp_path: Path) -> None:
    bounce = GOLDEN / "postfix" / "postfix_01.eml"
    plain = tmp_path / "hello.eml"
    plain.write_bytes(b"From: a@example.com\nTo: b@example.org\nSubject: hi\n\nlunch?\n")
    missing = tmp_path / "does-not-exist.eml"
    paths = [str(bounce), str(missing), str(plain), str(tmp_path), str(bounce)]
    out = _run("\n".join(paths) + "\n")
    assert [o["path"] for o in out] == paths  # one line per input line, in order
    first = out[0]
    assert "error" not in first
    assert first["recipients"] == [{
        "address": "xxxxx@local.ie", "status": "5.1.1", "action": "failed", "kind": "hard",
        "reason": "userunknown", "diagnostic": first["recipients"][0]["diagnostic"]}]
    assert "550" in first["recipients"][0]["diagnostic"]
    assert out[1]["recipients"] == [] and "error" in out[1]  # missing file
    assert out[2] == {"path": str(plain), "recipients": []}  # not a bounce
    assert out[3]["recipients"] == [] and "error" in out[3]  # a directory
    assert out[4]["recipients"] == first["recipients"]


def test_last_line_without_newline_and_empty_input() -> None:
    eml = GOLDEN / "arf" / "arf-01.eml"
    out = _run(str(eml))
    assert len(out) == 1 and out[0]["recipients"][0]["reason"] == "feedback"
    assert _run("") == []


def test_output_is_flushed_per_line() -> None:
    # A caller feeding paths one at a time must get each answer before sending the next.
    proc = subprocess.Popen([sys.executable, "-m", "outpost.bounces.cli"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdin and proc.stdout
        for eml in sorted(GOLDEN.glob("*/*.eml"))[:3]:
            proc.stdin.write(f"{eml}\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["path"] == str(eml)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
