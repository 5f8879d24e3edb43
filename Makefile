# Freshet: `make run` starts the embedded platform with a live demo, `make test` runs every test.
# Both install what they need (Debian packages with apt-get, Python packages into .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROJECTS := shared services/ingest services/control services/transform services/serve devstack
PYPROJECTS := $(addsuffix /pyproject.toml,$(PROJECTS))

.PHONY: help deps sysdeps venv run up down status test lint typecheck unit test-oracle bench bench-broker bench-ingest bench-transform bench-serve clean

help:
	@echo "make run    - start broker, PostgreSQL, Redis, the four services and the demo (Ctrl-C stops)"
	@echo "make up     - the same in the background; make down stops it; make status shows it"
	@echo "make test   - lint, type-check and run the whole test suite against real servers"
	@echo "make bench  - run the benchmarks and write BENCHMARKS.md (bench-ingest, bench-transform, bench-serve: one)"

deps: sysdeps venv

sysdeps:
	@bash scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): constraints.txt $(PYPROJECTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q -c constraints.txt pip setuptools
	@$(PY) -m pip install -q -c constraints.txt $(addprefix -e ./,$(PROJECTS)) \
		pytest pytest-timeout hypothesis schemathesis httpx ruff mypy types-requests types-PyYAML kubernetes-validate pyyaml requests
	@touch $(STAMP)

run: deps
	@$(PY) -m freshet.devstack run

up: deps
	@$(PY) -m freshet.devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m freshet.devstack down; fi

status: venv
	@$(PY) -m freshet.devstack status

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy shared/freshet services/*/freshet devstack/freshet

test: deps lint typecheck
	$(VENV)/bin/pytest

unit: venv
	$(VENV)/bin/pytest -m "not slow"

# The view oracle with many random rounds (each a new seed; a failing seed is printed).
test-oracle: deps
	FRESHET_ORACLE_ROUNDS=$${ROUNDS:-60} $(VENV)/bin/pytest tests/e2e/test_views_oracle.py

bench: deps
	$(PY) -m bench.run

bench-broker: deps
	$(PY) -m bench.run broker

bench-ingest: deps
	$(PY) -m bench.run ingest

bench-transform: deps
	$(PY) -m bench.run transform

bench-serve: deps
	$(PY) -m bench.run serve

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
