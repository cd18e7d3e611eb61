# Fynd Invoice Relay. `make run` and `make test` do all their own set-up on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Two installs: `make run` (and send/status/invoke) needs only the relay, the local runtime and
# the `relay` command (the `run` extra); everything else adds the development tools (`dev`).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= ap-south-1

# The Lambda runtime is python3.13; `sam build` without Docker needs it on PATH, so the
# virtual environment is built from it. Found on PATH, or in pyenv, or not at all (then say so).
PYTHON313 := $(shell \
	for candidate in python3.13 $$(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.13*/bin/python3 2>/dev/null | sort -V | tail -n 1); do \
		if "$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then echo "$$candidate"; break; fi; \
	done)

.PHONY: help install install-run test test-fast contract lint format validate build deploy run send status invoke bench fuzz chaos scale mutate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

define make_venv
	@if [ -z "$(PYTHON313)" ]; then \
		echo "error: Python 3.13 is needed (the Lambda runtime is python3.13)." >&2; \
		echo "       Install it (e.g. 'pyenv install 3.13', or your OS package) so that 'python3.13' runs, then retry." >&2; \
		exit 1; fi
	@[ -x $(BIN)/python ] || { echo "creating $(VENV) with $(PYTHON313)"; "$(PYTHON313)" -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --upgrade pip; }
endef

$(STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install --quiet --constraint src/functions/requirements.txt -e '.[dev]'
	@touch $@ $(RUN_STAMP)

# A venv that already has the development tools has everything `run` needs.
$(RUN_STAMP): pyproject.toml
	$(make_venv)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
		echo "installing what make run needs (make test adds the development tools)"; \
		$(BIN)/python -m pip install --quiet --constraint src/functions/requirements.txt -e '.[run]' && touch $@; fi

install: $(STAMP) ## create .venv (python3.13) and install the relay with its dev tools

install-run: $(RUN_STAMP) ## only what make run needs (the relay, the local runtime, the relay command)

# checkov (pinned in pyproject.toml's `security` dependency group) pins boto3 and packaging
# below what aws-sam-cli and pytest need, so it lives in an environment of its own.
# --skip-download: checkov fetches nothing (lint runs offline, as every test does).
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_STAMP): pyproject.toml | $(STAMP)
	@[ -x $(CHECKOV_VENV)/bin/python ] || "$(PYTHON313)" -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --group security
	@touch $@

lint: $(STAMP) $(CHECKOV_STAMP) ## ruff (lint + format check), mypy, and checkov on template.yaml
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation --file template.yaml

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

contract: $(STAMP) ## schemathesis against the local API with many more examples (CONTRACT_EXAMPLES, default 500)
	CONTRACT_EXAMPLES=$(or $(CONTRACT_EXAMPLES),500) $(BIN)/pytest -p no:xdist tests/integration/test_openapi_contract.py

build: $(STAMP) ## sam build (no Docker; python3.13 from the venv)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sam build --template template.yaml

# The stack name, region and Fynd URL: from STACK, REGION and FYND_BASE_URL, else asked for on a
# terminal, else an error naming the variable. Everything else comes from samconfig.toml.
# The region and the AWS credentials are checked (relay_cli.preflight) before anything is built.
deploy: $(STAMP) ## sam build + sam deploy, non-interactive (STACK=... REGION=... FYND_BASE_URL=https://... [ALARM_EMAIL=...])
	@stack="$(STACK)"; region="$(or $(REGION),$(AWS_REGION))"; fynd="$(FYND_BASE_URL)"; \
	ask() { if [ -t 0 ]; then read -r -p "$$1: " answer && printf '%s' "$$answer"; \
		else echo "deploy: set $$2 (e.g. make deploy $$2=...)" >&2; exit 2; fi; }; \
	[ -n "$$stack" ] || stack=$$(ask "Stack name (e.g. fynd-invoice-relay)" STACK) || exit 2; \
	[ -n "$$region" ] || region=$$(ask "AWS region (e.g. ap-south-1)" REGION) || exit 2; \
	[ -n "$$fynd" ] || fynd=$$(ask "Fynd base URL (https://...)" FYND_BASE_URL) || exit 2; \
	case "$$fynd" in https://?*) ;; *) echo "deploy: FYND_BASE_URL must be an https:// URL, not '$$fynd'" >&2; exit 2;; esac; \
	$(BIN)/python -m relay_cli.preflight --region "$$region" || exit $$?; \
	overrides="FyndBaseUrl=$$fynd"; [ -z "$(ALARM_EMAIL)" ] || overrides="$$overrides AlarmEmail=$(ALARM_EMAIL)"; \
	$(MAKE) --no-print-directory build && \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sam deploy --stack-name "$$stack" --region "$$region" \
		--parameter-overrides $$overrides --no-confirm-changeset && \
	echo && echo "Deployed $$stack. Put the Fynd credentials in place (README: Deploying), then prove it end to end:" && \
	echo "  $(BIN)/relay --stack $$stack --region $$region smoke [--location CODE]"

run: $(RUN_STAMP) ## the whole pipeline on 127.0.0.1 until Ctrl-C (FRESH=1: a new secret and ports)
	$(BIN)/python -m relay_local run $(if $(FRESH),--fresh)

send: $(RUN_STAMP) ## sign FILE with WEBHOOK_SECRET and post it to the local API
	@[ -n "$(FILE)" ] || { echo "usage: make send FILE=events/invoice.json" >&2; exit 2; }
	$(BIN)/python -m relay_local send "$(FILE)"

status: $(RUN_STAMP) ## ask the local API for ORDER's status (TYPE=return for a credit note)
	@[ -n "$(ORDER)" ] || { echo "usage: make status ORDER=FY-10001 [TYPE=return]" >&2; exit 2; }
	$(BIN)/python -m relay_local status "$(ORDER)" --type "$(or $(TYPE),sale)"

invoke: $(RUN_STAMP) ## run FN (IngestFunction|DispatchFunction|ReconcileFunction) once on EVENT, as sam local invoke would
	@[ -n "$(FN)" ] && [ -n "$(EVENT)" ] || { echo "usage: make invoke FN=IngestFunction EVENT=events/ingest-post-invoice.json" >&2; exit 2; }
	$(BIN)/python -m relay_local invoke "$(FN)" "$(EVENT)"

bench: build ## measure against the targets and a naive peer: one table, bench/results.json (never part of make test)
	$(BIN)/python tests/benchmarks/run.py

fuzz: $(STAMP) ## 100,000 hostile requests against ingest in-process (REQUESTS=, SEED= to change or replay)
	$(BIN)/python tests/ingest_fuzz.py --requests $(or $(REQUESTS),100000) $(if $(SEED),--seed $(SEED))

mutate: $(STAMP) ## mutation testing of relay/domain by the fast tests: score and survivors (MODULES="dispatch policy", JOBS=2; never part of make test)
	nice -n 10 $(BIN)/python tests/mutation/run.py $(if $(MODULES),--modules $(MODULES)) --jobs $(or $(JOBS),2)

chaos: $(STAMP) ## 10,000 invoices through the local relay under every fault (SEED=n to replay, DROP_SHARE=0.04, SENDERS=1), then 200 real Ctrl-C/SIGTERM stops
	$(BIN)/python tests/chaos/run.py --invoices $(or $(INVOICES),10000) $(if $(SEED),--seed $(SEED)) $(if $(DROP_SHARE),--drop-share $(DROP_SHARE)) --senders $(or $(SENDERS),1)
	RELAY_REAL_STOPS=$(or $(STOPS),200) $(BIN)/pytest -q -p no:randomly tests/integration/test_local_run_stops.py -k real_run

scale: $(STAMP) ## issue 19's sale-day scenarios in the discrete-event world (INVOICES=1000000 SEED=1 SCENARIO=all FYND_RATE=20 FYND_READ_RATE=20 PARAMS="Name=Value ...")
	$(BIN)/python tests/scale/run.py --invoices $(or $(INVOICES),1000000) --seed $(or $(SEED),1) --scenario $(or $(SCENARIO),all) --fynd-rate $(or $(FYND_RATE),20) --fynd-read-rate $(or $(FYND_READ_RATE),20) $(foreach p,$(PARAMS),--param $(p))

clean: ## remove the venv, build output and caches
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache src/*/*.egg-info
