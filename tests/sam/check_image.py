"""Prove the SMTP submission image's Python environment without a Docker engine.

functions/smtp_submission/Dockerfile is read, not re-typed: its COPY sources are staged as
the image's filesystem (honouring .dockerignore, as a build context would), its `pip install`
runs with the same flags on a python3.12 venv (the python:3.12-slim interpreter's version),
and its CMD's module must then be importable with its ENV (PYTHONPATH), with boto3 and aiosmtpd
beside it. For ARM64 (the task's default CpuArchitecture), every locked package must have a
file with a hash from the lock that installs there: a manylinux aarch64 / CPython 3.12 wheel
whose shared objects are all aarch64 ELFs, or an sdist that builds a pure-Python wheel (the
slim image has no compiler).

    python tests/sam/check_image.py --python /path/to/python3.12 --work .aws-sam/ci-image
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "functions/smtp_submission/Dockerfile"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_arch import check as check_elf_arch  # noqa: E402  (a script beside this one)


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def image_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(arg for kind, arg in steps if kind == "ENV")))


def ignore_patterns(root: Path = ROOT) -> list[str]:
    lines = (root / ".dockerignore").read_text().splitlines()
    return [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for p in patterns:
        negate, pat = p.startswith("!"), p.lstrip("!")
        if any(fnmatch.fnmatchcase(x, pat) for x in prefixes):
            verdict = not negate
    return verdict


def stage(steps: list[tuple[str, str]], fs: Path) -> int:
    """Copy every COPY source the build context keeps to fs/<destination>; files copied."""
    patterns, count = ignore_patterns(), 0
    for kind, arg in steps:
        if kind != "COPY":
            continue
        *sources, dest = shlex.split(arg)
        for src in sources:
            base = ROOT / src
            files = [f for f in base.rglob("*") if f.is_file()] if base.is_dir() else [base]
            for f in files:
                rel = str(f.relative_to(ROOT))
                if ignored(rel, patterns):
                    continue
                target = fs / dest.lstrip("/") / (f.relative_to(base) if base.is_dir() else "")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                count += 1
    return count


def pip_install_args(steps: list[tuple[str, str]], fs: Path) -> list[str]:
    """The Dockerfile's `pip install ...` arguments, its paths moved into the staged fs."""
    (run,) = [arg for kind, arg in steps if kind == "RUN" and "pip install" in arg]
    words = shlex.split(run.split("&&")[0])
    args = words[words.index("install") + 1:]
    return [str(fs / a.lstrip("/")) if a.startswith("/") else a for a in args]


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


_PROBE = """
import importlib.util, json, sys
import aiosmtpd.smtp, boto3, outpost, outpost.bootstrap, outpost.config
module = sys.argv[1]
spec = importlib.util.find_spec(module)
main = spec and (importlib.util.find_spec(module + ".__main__") if spec.submodule_search_locations else spec)
print(json.dumps({"python": sys.version.split()[0], "outpost": outpost.__file__, "boto3": boto3.__version__,
                  "aiosmtpd": aiosmtpd.smtp.__version__, "cmd_module": main and main.origin}))
"""


def check_install(python: str, work: Path, steps: list[tuple[str, str]]) -> list[str]:
    """The image's pip step on python3.12, then its CMD's module imported with its ENV."""
    fs, venv = work / "fs", work / "venv"
    shutil.rmtree(work, ignore_errors=True)
    print(f"staged {stage(steps, fs)} files of the build context")
    if (r := run([python, "-m", "venv", str(venv)])).returncode:
        return [f"venv: {r.stderr.strip()}"]
    if (r := run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *pip_install_args(steps, fs)])).returncode:
        return [f"pip install as the Dockerfile runs it failed: {r.stderr.strip()[-2000:]}"]
    cmd = json.loads(next(arg for kind, arg in steps if kind == "CMD"))
    if cmd[:2] != ["python", "-m"]:
        return [f"CMD is not `python -m <module>`: {cmd}"]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin",
           **{k: str(fs / v.lstrip("/")) if k == "PYTHONPATH" else v for k, v in image_env(steps).items()}}
    r = run([str(venv / "bin/python"), "-c", _PROBE, cmd[2]], cwd=fs, env=env)
    if r.returncode:
        return [f"importing the image's modules failed: {r.stderr.strip()[-2000:]}"]
    found = json.loads(r.stdout)
    print(f"image python: {found}")
    problems = [] if str(found["outpost"]).startswith(str(fs)) else [f"outpost came from {found['outpost']}"]
    if not found["cmd_module"]:
        problems.append(f"CMD's module {cmd[2]} is not in the image (python -m would fail)")
    return problems


def check_arm64(python: str, work: Path, lock: Path) -> list[str]:
    """Every locked package installs on aarch64 / CPython 3.12 from a locked file: a wheel whose
    shared objects are aarch64, or an sdist that builds a pure-Python wheel (the slim image has
    no compiler)."""
    files, tree, built = work / "arm64-files", work / "arm64-unpacked", work / "arm64-built"
    platforms = [f"--platform=manylinux_2_{v}_aarch64" for v in (36, 34, 31, 28, 24, 17)] + [
        "--platform=manylinux2014_aarch64"]
    pip = [str(work / "venv/bin/python"), "-m", "pip"]
    r = run([*pip, "download", "-q", "--prefer-binary", *platforms, "--python-version=3.12",
             "--implementation=cp", "--no-deps", "--require-hashes", "-r", str(lock), "-d", str(files)])
    if r.returncode:
        return [f"some locked package has no aarch64-installable file: {r.stderr.strip()[-2000:]}"]
    problems = []
    for sdist in sorted(p for p in files.iterdir() if not p.name.endswith(".whl")):
        r = run([*pip, "wheel", "-q", "--no-deps", "-w", str(built), str(sdist)])
        made = sorted(p.name for p in built.glob("*.whl")) if built.exists() else []
        if r.returncode or not made or not made[-1].endswith("-none-any.whl"):
            problems.append(f"{sdist.name}: no aarch64 wheel, and it does not build a pure-Python one")
        print(f"{sdist.name}: sdist only; builds {made[-1] if made else 'nothing'}")
        shutil.rmtree(built, ignore_errors=True)
    wheels = sorted(files.glob("*.whl"))
    print(f"{len(wheels)} aarch64-installable wheels: {', '.join(w.name for w in wheels)}")
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            z.extractall(tree / whl.stem)
    return problems + check_elf_arch(tree, "arm64")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="a python3.12 interpreter")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (emptied)")
    args = parser.parse_args(argv)
    steps = instructions()
    lock = ROOT / shlex.split(next(a for k, a in steps if k == "COPY" and "requirements" in a))[0]
    problems = check_install(args.python, args.work, steps)
    if (args.work / "venv/bin/python").exists():  # independent of the CMD probe's verdict
        problems += check_arm64(args.python, args.work, lock)
    for problem in problems:
        print("  " + problem)
    print("image check: " + ("FAIL" if problems else "PASS"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
