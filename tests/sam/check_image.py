"""Prove the SMTP submission image without a Docker engine: its Python environment, and its CMD
running with the task definition's environment.

functions/smtp_submission/Dockerfile is read, not re-typed: its COPY sources are staged as
the image's filesystem (honouring .dockerignore, as a build context would), its `pip install`
runs with the same flags on a python3.12 venv (the python:3.12-slim interpreter's version),
and its CMD's module must then be importable with its ENV (PYTHONPATH), with boto3 and aiosmtpd
beside it. For ARM64 (the task's default CpuArchitecture), every locked package must have a
file with a hash from the lock that installs there: a manylinux aarch64 / CPython 3.12 wheel
whose shared objects are all aarch64 ELFs, or an sdist that builds a pure-Python wheel (the
slim image has no compiler).

Then the smoke run: the CMD starts on that staged filesystem with the container Environment
template.yaml gives the task (resolved for tables, queue and bucket provisioned on a local moto
server holding the certificate secret; only the listen address and ports are moved to loopback
and free ports). A client checks the greeting name, 530 for AUTH before STARTTLS, the
certificate (verified against its CA), AUTH with a real key, a From on no verified domain
refused with 550, and AUTH over implicit TLS; then SIGTERM with an idle session open must end
the process within the task's StopTimeout (--stop-budget, 120 s), as ECS SIGKILLs it after.

    python tests/sam/check_image.py --python /path/to/python3.12 --work .aws-sam/ci-image
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
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
            problems.append(f"{sdist.name}: no aarch64 wheel, and it does not build a pure-Python one "
                            f"(pip wheel: {r.returncode}, {r.stderr.strip()[-1500:]})")
        print(f"{sdist.name}: sdist only; builds {made[-1] if made else 'nothing'}")
        shutil.rmtree(built, ignore_errors=True)
    wheels = sorted(files.glob("*.whl"))
    print(f"{len(wheels)} aarch64-installable wheels: {', '.join(w.name for w in wheels)}")
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            z.extractall(tree / whl.stem)
    return problems + check_elf_arch(tree, "arm64")


# ---- smoke: the image's CMD run with the task definition's environment -------------------------

def task_environment(parameters: dict[str, str], stack: object) -> dict[str, str]:
    """The submission container's Environment from template.yaml, resolved for a provisioned
    local stack (its physical table, queue and bucket names)."""
    from outpost_local.provision import _Resolver, load_template

    t = load_template()
    (container,) = t["Resources"]["SmtpSubmissionTaskDefinition"]["Properties"]["ContainerDefinitions"]
    resolver = _Resolver(t, stack, parameters)  # type: ignore[arg-type]
    return {e["Name"]: str(resolver.resolve(e["Value"])) for e in container["Environment"]}


def _local_aws(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    from outpost_local.lifecycle import free_port, wait_port

    port = free_port()
    log = (work / "moto.log").open("wb")
    moto = subprocess.Popen([sys.executable, "-m", "outpost_local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_port("127.0.0.1", port, 60, moto, what="moto")
    return moto, f"http://127.0.0.1:{port}"


def _certificate(work: Path) -> tuple[dict[str, str], Path]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("smtp.outpost.test", "127.0.0.1")
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain = "".join(b.bytes().decode() for b in leaf.cert_chain_pems)
    return {"certificate_chain": chain, "private_key": leaf.private_key_pem.bytes().decode()}, ca_file


def _api_key(env: dict[str, str]) -> str:
    """A key of scope `send` in the stack's keys table, as `outpost-admin keys create` makes one."""
    os.environ.update({k: v for k, v in env.items() if k.startswith(("OUTPOST_", "AWS_"))})
    from outpost import bootstrap
    from outpost.api.auth import KeyRing

    key, _ = KeyRing(bootstrap.api_keys_table()).create("image-smoke", ["send"])
    return key


def _converse(starttls: int, tls: int, ca_file: Path, key: str, hostname: str) -> list[str]:
    """A client's view: greeting name, STARTTLS before AUTH, AUTH with the key, a message whose
    From is on no verified domain refused at DATA; implicit TLS on the other port."""
    problems, ctx = [], ssl.create_default_context(cafile=str(ca_file))
    with smtplib.SMTP("127.0.0.1", starttls, timeout=60) as c:
        code, text = c.ehlo("image-smoke.test")
        if not text.decode().startswith(hostname) or not c.has_extn("starttls"):
            problems.append(f"EHLO on the STARTTLS port: {code} {text!r}")
        if (got := c.docmd("AUTH", "PLAIN AG91dHBvc3QAeA=="))[0] != 530:
            problems.append(f"AUTH before STARTTLS answered {got}, not 530")
        c.starttls(context=ctx)  # the certificate from Secrets Manager, verified against the CA
        c.ehlo("image-smoke.test")
        c.login("outpost", key)  # raises unless 235
        message = "From: a@unverified.example\r\nTo: r@example.net\r\nSubject: smoke\r\n\r\nhi\r\n"
        try:
            c.sendmail("a@unverified.example", ["r@example.net"], message)
            problems.append("a From on no verified domain was accepted")
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            print(f"unverified From: {e.smtp_code} {e.smtp_error!r}")
            if e.smtp_code != 550:
                problems.append(f"unverified From answered {e.smtp_code}, not 550")
    with smtplib.SMTP_SSL("127.0.0.1", tls, context=ctx, timeout=60) as c:
        c.ehlo("image-smoke.test")
        c.login("outpost", key)
    return problems


def _stop_with_an_idle_session(proc: subprocess.Popen[bytes], port: int, budget: float) -> list[str]:
    """SIGTERM while a client sits idle after EHLO: the process must be gone within `budget`
    (ECS's StopTimeout, after which it is SIGKILLed)."""
    idle = smtplib.SMTP("127.0.0.1", port, timeout=budget + 30)
    idle.ehlo("idle.test")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(budget)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    print(f"SIGTERM with an idle session open: {'exit ' + str(rc) if rc is not None else 'still running'} "
          f"after {took:.1f} s")
    with contextlib.suppress(OSError, smtplib.SMTPException):
        idle.close()
    if rc is None:
        try:  # for the report: does it end once the last client has gone?
            rc = proc.wait(30)
            print(f"... and exit {rc} {time.monotonic() - t0 - took:.1f} s after the idle client left")
        except subprocess.TimeoutExpired:
            print("... and still running 30 s after the idle client left")
        return [f"still running {budget:.0f} s after SIGTERM with an idle session open (ECS would SIGKILL it)"]
    return [] if rc == 0 else [f"exited {rc} after SIGTERM"]


def smoke(work: Path, steps: list[tuple[str, str]], stop_budget: float) -> list[str]:
    """Run the CMD on the staged image filesystem with the task definition's environment, against
    a local AWS endpoint (moto) holding the certificate secret and the provisioned tables."""
    saved = dict(os.environ)
    try:
        return _smoke(work, steps, stop_budget)
    finally:  # the key's creation reads settings from this process's environment: put it back
        os.environ.clear()
        os.environ.update(saved)


def _smoke(work: Path, steps: list[tuple[str, str]], stop_budget: float) -> list[str]:
    import boto3

    from outpost_local.lifecycle import free_port, wait_port
    from outpost_local.provision import provision

    fs, venv = work / "fs", work / "venv"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    moto, endpoint = _local_aws(work)
    os.environ.update({**creds, "AWS_ENDPOINT_URL": endpoint})
    proc = None
    try:
        secret, ca_file = _certificate(work)
        session = boto3.Session(region_name="us-east-1")
        arn = session.client("secretsmanager").create_secret(
            Name="outpost/smtp-submission-tls", SecretString=json.dumps(secret))["ARN"]
        params = {"SendingHostname": "mta.outpost.test", "BounceDomain": "bounces.outpost.test",
                  "EnableSmtpSubmission": "true", "SmtpSubmissionTlsSecretArn": arn,
                  "SmtpSubmissionImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/outpost-submission:smoke",
                  "SmtpSubmissionHostname": "smtp.outpost.test"}
        task_env = task_environment(params, provision(session, parameters=params))
        starttls, tls = free_port(), free_port()
        # The one change from the task definition: loopback and free ports, not 0.0.0.0:2587/2465.
        local = {"OUTPOST_SUBMISSION_HOST": "127.0.0.1", "OUTPOST_SUBMISSION_STARTTLS_PORT": str(starttls),
                 "OUTPOST_SUBMISSION_TLS_PORT": str(tls)}
        image = {k: str(fs / v.lstrip("/")) if k == "PYTHONPATH" else v for k, v in image_env(steps).items()}
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **image, **task_env, **local, **creds,
               "AWS_ENDPOINT_URL": endpoint}
        cmd = json.loads(next(arg for kind, arg in steps if kind == "CMD"))
        log = (work / "server.log").open("wb")
        t0 = time.monotonic()
        proc = subprocess.Popen([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=fs, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", starttls, 120, proc, banner=b"220", what="the submission server")
        print(f"`{' '.join(cmd)}` answered 220 after {time.monotonic() - t0:.1f} s")
        problems = _converse(starttls, tls, ca_file, _api_key(task_env), params["SmtpSubmissionHostname"])
        return problems + _stop_with_an_idle_session(proc, starttls, stop_budget)
    finally:
        for p in (proc, moto):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="a python3.12 interpreter")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (emptied)")
    parser.add_argument("--no-smoke", action="store_true", help="skip running the CMD")
    parser.add_argument("--stop-budget", type=float, default=120.0,
                        help="seconds the server may take to exit on SIGTERM (the task's StopTimeout)")
    args = parser.parse_args(argv)
    steps = instructions()
    lock = ROOT / shlex.split(next(a for k, a in steps if k == "COPY" and "requirements" in a))[0]
    problems = check_install(args.python, args.work, steps)
    if not problems and not args.no_smoke:
        problems += smoke(args.work, steps, args.stop_budget)
    if (args.work / "venv/bin/python").exists():  # independent of the CMD probe's verdict
        problems += check_arm64(args.python, args.work, lock)
    for problem in problems:
        print("  " + problem)
    print("image check: " + ("FAIL" if problems else "PASS"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
