# Outpost: the two commands of the README, and a few more.
#   make demo   run Outpost end to end on the embedded local stack (no AWS, no Docker)
#   make test   run the test suite
#   make dev    keep the local stack running for curl
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test dev install lint bench sam-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# AWS's DynamoDB Local (Java) for the local stack's tables, from npm, pinned; skipped with a
# note when java or npm is missing (the stack then falls back to moto's DynamoDB).
DDB_LOCAL := .local-aws/amplify-dynamodb-simulator-2.9.30/emulator/DynamoDBLocal.jar
$(DDB_LOCAL): | $(VENV)/.installed
	$(PY) -m outpost_local.dynamodb_local install

install: $(VENV)/.installed $(DDB_LOCAL)

demo: install
	$(PY) -m outpost_local demo

dev: install
	$(PY) -m outpost_local dev

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check layers local functions tests bench
	$(VENV)/bin/mypy layers/outpost/outpost

bench: install
	$(PY) bench/dkim_sign.py
	$(PY) bench/bounce_score.py

sam-check: install
	bash .ci/sam_check.sh

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
