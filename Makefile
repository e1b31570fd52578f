# Every target bootstraps .venv (and node_modules for the CDK CLI) idempotently, so a fresh
# clone needs only Python >= 3.11, Node.js 22 (20 still works; docs/deploy.md#nodejs) and npm.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
PYTEST_WORKERS ?= auto

NODE_STAMP := node_modules/.package-lock.json

.PHONY: install demo test test-unit lint bench clean openapi chaos captures screenshots

install: $(STAMP) $(NODE_STAMP)

# The pinned CDK CLI (and cdklocal) for synth and the deploy rehearsal.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,infra]'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/stratoflow run examples/etl/etl.yaml

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

test-unit: $(STAMP)  ## the fast layer: pure core, runner, cost model (seconds)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q tests/unit

lint: $(STAMP)  ## ruff (lint and format) and mypy (strict on core, services, ports, embedded)
	$(VENV)/bin/ruff check shared functions infra tests bench
	$(VENV)/bin/ruff format --check shared functions infra tests bench
	$(VENV)/bin/mypy

CHAOS_WORKERS ?= 4
chaos: $(STAMP)  ## fault injection: 500 seeded runs on the embedded engine, 100 on the emulator, 20 engine kills (~5 min); SEED=n reruns one seed
ifdef SEED
	$(PY) -m pytest -n 0 -q tests/chaos --chaos-seed=$(SEED) -k "not test_known_issues"
else
	$(PY) -m pytest -n $(CHAOS_WORKERS) --dist load -q -m chaos tests/chaos
endif

bench: $(STAMP)  ## both local engines beside the floor and Luigi (bench/run.py pip-installs Luigi into the venv if missing); ~6 min
	$(PY) bench/run.py

captures: $(STAMP)  ## the terminal captures in README.md and docs/captures/ (needs tmux)
	$(PY) docs/tools/capture_terminal.py

screenshots: $(STAMP)  ## the web console's pictures in docs/images/ (README, docs/operations.md), taken by its browser tests
	mkdir -p docs/images
	STRATOFLOW_SCREENSHOTS=docs/images $(PY) -m pytest -n 0 -q tests/e2e/test_console.py -k "workflows_page or retry_after"

clean:
	rm -rf $(VENV) .stratoflow .pytest_cache .ruff_cache cdk.out node_modules

openapi: $(STAMP)  ## regenerate docs/openapi.json from the API's code
	$(PY) -c "import json; from stratoflow.handlers.api import openapi_document; open('docs/openapi.json', 'w').write(json.dumps(openapi_document(), indent=2, sort_keys=True) + '\n')"
