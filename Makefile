# Agent Executor: the commands a developer needs. `make demo` and `make test` work on a fresh machine
# with the prerequisites of the README (Python 3.11+, Java 17+, the Google Cloud SDK emulators).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup prereqs dev demo test test-fast lint bench lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@scripts/prereqs.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

prereqs:
	@scripts/prereqs.sh

# The whole system on loopback until Ctrl-C: API at http://127.0.0.1:8080 (token: dev-token).
dev: setup
	$(BIN)/agex dev

# Start the local stack, run the sample support agent end to end, print each step, stop.
demo: setup
	$(BIN)/agex demo

# Every test, emulators included (the tests start and stop them).
test: setup
	$(BIN)/pytest

# Unit and API tests only: no emulators, seconds.
test-fast: setup
	$(BIN)/pytest tests/unit tests/api

lint: setup
	$(BIN)/ruff check shared functions emulators examples tests bench
	$(BIN)/mypy shared/agex

bench: setup
	$(BIN)/python -m bench.run

# Re-pin the dependency tree after changing pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e ".[dev,bench]"
	.lockenv/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .agex .pytest_cache
