# Outpost: the two commands of the README, and a few more.
#   make demo   run Outpost end to end on the embedded local stack (no AWS, no Docker)
#   make test   run the test suite
#   make dev    keep the local stack running for curl
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test dev install lint bench sam-check clean lock

# The dev environment comes from the hash-locked requirements-dev.txt (every package pinned and
# checked against its hashes), then the project itself without resolving anything else.
$(VENV)/.installed: pyproject.toml requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# AWS's DynamoDB Local (Java) for the local stack's tables, from npm, pinned; skipped with a
# note when java or npm is missing (the stack then falls back to moto's DynamoDB).
DDB_LOCAL := .local-aws/amplify-dynamodb-simulator-2.9.30/emulator/DynamoDBLocal.jar
$(DDB_LOCAL): | $(VENV)/.installed
	$(PY) -m outpost_local.dynamodb_local install

install: $(VENV)/.installed $(DDB_LOCAL)

# Re-resolve both locks (after changing pyproject.toml or layers/outpost/requirements.in, or to
# take updates): the dev environment for Python 3.11+, then the Lambda layer for python3.12 on
# arm64 and x86_64 (--universal keeps every platform's wheels' hashes), held to the dev lock's
# versions so the tests run what the layer ships; then the SMTP submission image's lock (the
# layer's packages plus boto3 and aiosmtpd), held the same way. uv is a build tool, not a dependency.
UV := $(VENV)/bin/uv
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install -q uv
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" -o requirements-dev.txt $(LOCK_ARGS)
	$(UV) pip compile layers/outpost/requirements.in --universal --python-version 3.12 \
		--generate-hashes --custom-compile-command "make lock" -c requirements-dev.txt \
		-o layers/outpost/requirements.txt $(LOCK_ARGS)
	$(UV) pip compile functions/smtp_submission/requirements.in --universal --python-version 3.12 \
		--generate-hashes --custom-compile-command "make lock" -c requirements-dev.txt \
		-o functions/smtp_submission/requirements.txt $(LOCK_ARGS)

demo: install
	$(PY) -m outpost_local demo

dev: install
	$(PY) -m outpost_local dev

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check layers admin local functions tests bench
	$(VENV)/bin/mypy layers/outpost/outpost admin/outpost_admin
	$(VENV)/bin/mypy local/outpost_local

bench: install
	$(PY) bench/dkim_sign.py
	$(PY) bench/bounce_score.py

sam-check: install
	bash .ci/sam_check.sh

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
