#!/usr/bin/env bash
# CI proof that template.yaml is valid, builds, and that the built functions really run.
#
#   1. lint     sam validate --lint (cfn-lint on the transformed template)
#   2. build    sam build for arm64 (the default: manylinux aarch64 wheels) and for x86_64
#               (--parameter-overrides Architecture=x86_64, which sam build honours for the
#               functions and for the layer's Metadata.BuildArchitecture), in parallel
#   3. arch     every shared object in each build is an ELF for the claimed machine
#   3a. bytecode each build's OutpostBytecodeLayer holds a valid checked-hash .cpython-312.pyc for
#               every module of OutpostLayer (python3.12), and on x86_64 the imports read them
#   3b. image   the SMTP submission Dockerfile's pip step on python3.12, every locked package
#               installable on aarch64, then its CMD run with the task definition's environment
#               against moto (TLS from the secret, AUTH, a refusal, SIGTERM within StopTimeout)
#   4. invoke   the x86_64 build under the Lambda Runtime Interface Emulator shipped with
#               aws-sam-cli, runtime awslambdaric on python3.12, against a moto server
#               provisioned from the template (python -m outpost_local provision)
#
# Usage: .ci/sam_check.sh            (from anywhere; exits non-zero on any failure)
# Env:   PY312_DIR        directory holding python3.12 (default: pyenv's 3.12.1)
#        SAM_CHECK_ENV    use this KEY=VALUE env file instead of provisioning
#        SAM_CHECK_KEEP   1 = keep .aws-sam/ci-* build dirs from a previous run (faster reruns)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
SAM=$VENV/bin/sam
PY312_DIR=${PY312_DIR:-/root/.pyenv/versions/3.12.1/bin}
# sam build looks for the runtime's interpreter on PATH; pyenv shims are not assumed.
export PATH="$PY312_DIR:$PATH"
export SAM_CLI_TELEMETRY=0
RIE=$($PY -c 'import samcli, pathlib; print(pathlib.Path(samcli.__file__).parent / "local/rapid/aws-lambda-rie-x86_64")')

WORK=$ROOT/.aws-sam
LOGS=$WORK/ci-logs
BUILD_ARM=$WORK/ci-arm64/build
BUILD_X86=$WORK/ci-x86_64/build
RIE_VENV=$WORK/rie-venv
mkdir -p "$LOGS"

declare -a SUMMARY=()
FAILED=0
MOTO_PID=""

cleanup() {
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
}
trap cleanup EXIT

record() {  # record NAME STATUS SECONDS [DETAIL]
    SUMMARY+=("$(printf '%-5s %-34s %4ss  %s' "$2" "$1" "$3" "${4:-}")")
    [[ "$2" == PASS ]] || FAILED=1
}

step() {  # step NAME COMMAND...: run, log to $LOGS/NAME.log, record PASS/FAIL with timing
    local name=$1; shift
    local log=$LOGS/$name.log t0=$SECONDS
    echo "== $name: $*"
    if "$@" >"$log" 2>&1; then
        record "$name" PASS $((SECONDS - t0))
        return 0
    fi
    record "$name" FAIL $((SECONDS - t0)) "see $log"
    tail -n 40 "$log" | sed 's/^/   | /'
    return 1
}

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- 0. prerequisites -----------------------------------------------------------------
if [[ ! -x "$PY312_DIR/python3.12" ]]; then
    echo "python3.12 not found in $PY312_DIR (set PY312_DIR)"; exit 2
fi
if [[ ! -x "$RIE" ]]; then
    echo "Lambda RIE not found at $RIE"; exit 2
fi

# -- 1. lint ------------------------------------------------------------------------------
step lint "$SAM" validate --lint --template template.yaml

# -- 2. build, both architectures at once (each is mostly pip downloading wheels) ----------
build() {  # build ARCH BUILD_DIR
    local arch=$1 dir=$2
    [[ "${SAM_CHECK_KEEP:-0}" == 1 ]] || rm -rf "$dir"
    # Each build gets its own parent directory: sam build writes build.toml beside the
    # build dir, and two concurrent builds must not share it.
    "$SAM" build --template template.yaml --build-dir "$dir" \
        --cache-dir "$(dirname "$dir")/cache" --parameter-overrides "Architecture=$arch"
}
t0=$SECONDS
echo "== build-arm64 and build-x86_64 (parallel)"
build arm64 "$BUILD_ARM" >"$LOGS/build-arm64.log" 2>&1 &
PID_ARM=$!
build x86_64 "$BUILD_X86" >"$LOGS/build-x86_64.log" 2>&1 &
PID_X86=$!
for arch in arm64 x86_64; do
    pid_var=PID_ARM; [[ $arch == x86_64 ]] && pid_var=PID_X86
    if wait "${!pid_var}"; then
        record "build-$arch" PASS $((SECONDS - t0))
    else
        record "build-$arch" FAIL $((SECONDS - t0)) "see $LOGS/build-$arch.log"
        tail -n 40 "$LOGS/build-$arch.log" | sed 's/^/   | /'
    fi
done

# -- 3. the builds target what they claim ---------------------------------------------------
[[ -d "$BUILD_ARM" ]] && step arch-arm64 "$PY" tests/sam/check_arch.py "$BUILD_ARM" arm64
[[ -d "$BUILD_X86" ]] && step arch-x86_64 "$PY" tests/sam/check_arch.py "$BUILD_X86" x86_64

# -- 3a. the bytecode layer matches the code layer (python3.12's magic number and source hash) --
[[ -d "$BUILD_ARM" ]] && step bytecode-arm64 "$PY312_DIR/python3.12" tests/sam/check_bytecode.py "$BUILD_ARM"
[[ -d "$BUILD_X86" ]] && step bytecode-x86_64 "$PY312_DIR/python3.12" tests/sam/check_bytecode.py "$BUILD_X86" --import

# -- 3b. the SMTP submission image's Python environment (no Docker engine needed) -------------
step image "$PY" tests/sam/check_image.py --python "$PY312_DIR/python3.12" --work "$WORK/ci-image"

# -- 4. run the x86_64 artifacts under the emulator ------------------------------------------
rie_venv() {
    # A stand-in for the python3.12 Lambda runtime: awslambdaric plus boto3, which the
    # runtime provides and the layer therefore does not ship.
    if [[ ! -x "$RIE_VENV/bin/python" ]] || ! "$RIE_VENV/bin/python" -c 'import awslambdaric, boto3' 2>/dev/null; then
        rm -rf "$RIE_VENV"
        "$PY312_DIR/python3.12" -m venv "$RIE_VENV" || return 1
        "$RIE_VENV/bin/pip" install --quiet awslambdaric boto3 || return 1
    fi
    "$RIE_VENV/bin/python" -c 'import sys, awslambdaric, boto3; print(sys.version, boto3.__version__)'
}
step rie-venv rie_venv

if [[ -d "$BUILD_X86" && -x "$RIE_VENV/bin/python" ]]; then
    MOTO_PORT=$(free_port)
    ENDPOINT=http://127.0.0.1:$MOTO_PORT
    # moto with its SQS mutations serialised (outpost_local/moto_server.py). DynamoDB stays on
    # moto here: this step proves the built artifacts import and run, one invocation at a time;
    # the concurrency rules are proven on DynamoDB Local by the test suite.
    $PY -m outpost_local.moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 1 100); do
        $PY -c "import socket; socket.create_connection(('127.0.0.1', $MOTO_PORT), 0.2).close()" 2>/dev/null && break
        sleep 0.1
    done

    ENV_FILE=${SAM_CHECK_ENV:-$WORK/ci-env}
    if [[ -z "${SAM_CHECK_ENV:-}" ]]; then
        step provision env PYTHONPATH="$ROOT/layers/outpost:$ROOT/local" \
            AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
            "$PY" -m outpost_local provision --endpoint "$ENDPOINT" --env-out "$ENV_FILE"
    fi
    if [[ -s "$ENV_FILE" ]]; then
        step invoke-rie "$PY" tests/sam/invoke_rie.py --build-dir "$BUILD_X86" \
            --env-file "$ENV_FILE" --python "$RIE_VENV/bin/python" --rie "$RIE" \
            --endpoint "$ENDPOINT" --log-dir "$LOGS"
        sed 's/^/   /' "$LOGS/invoke-rie.log"
    else
        record invoke-rie FAIL 0 "no environment file ($ENV_FILE)"
    fi
else
    record invoke-rie FAIL 0 "no x86_64 build or no runtime venv"
fi

# -- summary ---------------------------------------------------------------------------------
echo
echo "SAM check summary (${SECONDS}s total):"
printf '  %s\n' "${SUMMARY[@]}"
if [[ $FAILED == 0 ]]; then
    echo "SAM CHECK: PASS"
else
    echo "SAM CHECK: FAIL"
fi
exit $FAILED
