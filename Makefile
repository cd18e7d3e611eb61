# Fynd Invoice Relay. `make run` and `make test` do all their own set-up on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= ap-south-1

# The Lambda runtime is python3.13; `sam build` without Docker needs it on PATH, so the
# virtual environment is built from it. Found on PATH, or in pyenv, or not at all (then say so).
PYTHON313 := $(shell \
	for candidate in python3.13 $$(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.13*/bin/python3 2>/dev/null | sort -V | tail -n 1); do \
		if "$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then echo "$$candidate"; break; fi; \
	done)

.PHONY: help install test test-fast lint format validate build run send status invoke bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON313)" ]; then \
		echo "error: Python 3.13 is needed (the Lambda runtime is python3.13)." >&2; \
		echo "       Install it (e.g. 'pyenv install 3.13', or your OS package) so that 'python3.13' runs, then retry." >&2; \
		exit 1; fi
	@[ -x $(BIN)/python ] || { echo "creating $(VENV) with $(PYTHON313)"; "$(PYTHON313)" -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint src/functions/requirements.txt -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv (python3.13) and install the relay with its dev tools

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

validate: $(STAMP) ## cfn-lint and sam validate --lint on template.yaml
	$(BIN)/cfn-lint template.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sam validate --lint --template template.yaml

test: lint validate ## lint, validate the template, then the whole test suite
	$(BIN)/pytest --numprocesses 4

test-fast: $(STAMP) ## the test suite alone
	$(BIN)/pytest --numprocesses 4

build: $(STAMP) ## sam build (no Docker; python3.13 from the venv)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sam build --template template.yaml

run: $(STAMP) ## the whole pipeline on 127.0.0.1 until Ctrl-C
	$(BIN)/python -m relay_local run

send: $(STAMP) ## sign FILE with WEBHOOK_SECRET and post it to the local API
	@[ -n "$(FILE)" ] || { echo "usage: make send FILE=events/invoice.json" >&2; exit 2; }
	$(BIN)/python -m relay_local send "$(FILE)"

status: $(STAMP) ## ask the local API for ORDER's status (TYPE=return for a credit note)
	@[ -n "$(ORDER)" ] || { echo "usage: make status ORDER=FY-10001 [TYPE=return]" >&2; exit 2; }
	$(BIN)/python -m relay_local status "$(ORDER)" --type "$(or $(TYPE),sale)"

invoke: $(STAMP) ## run FN (IngestFunction|DispatchFunction) once on EVENT, as sam local invoke would
	@[ -n "$(FN)" ] && [ -n "$(EVENT)" ] || { echo "usage: make invoke FN=IngestFunction EVENT=events/ingest-post-invoice.json" >&2; exit 2; }
	$(BIN)/python -m relay_local invoke "$(FN)" "$(EVENT)"

bench: build ## measure against the targets and a naive peer: one table, bench/results.json (never part of make test)
	$(BIN)/python tests/benchmarks/run.py

clean: ## remove the venv, build output and caches
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache src/*/*.egg-info
