# Every target bootstraps .venv (and node_modules for the CDK CLI) idempotently, so a fresh
# clone needs only Python >= 3.11, Node.js 20 and npm.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
PYTEST_WORKERS ?= auto

NODE_STAMP := node_modules/.package-lock.json

.PHONY: install demo test lint bench clean openapi

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

lint: $(STAMP)
	$(VENV)/bin/ruff check shared functions infra tests

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .stratoflow .pytest_cache .ruff_cache cdk.out node_modules

openapi: $(STAMP)  ## regenerate docs/openapi.json from the API's code
	$(PY) -c "import json; from stratoflow.handlers.api import openapi_document; open('docs/openapi.json', 'w').write(json.dumps(openapi_document(), indent=2, sort_keys=True) + '\n')"
