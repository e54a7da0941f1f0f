# fleetpulse: `make run` starts the local stack, `make test` runs the full suite.
SHELL := /bin/bash
PY := .venv/bin/python
SETUP_STAMP := .venv/.fleetpulse-installed

.PHONY: run run-empty test stop status setup test-setup lint typecheck pytest bench clean

# The demo fleet: make run COURIERS=500 VEHICLES=20 RATE=60 SEED=7 (RATE: new orders a minute).
COURIERS ?= 25
VEHICLES ?= 5
RATE ?= 12
SEED ?=
TIME_SCALE ?= 1

run: setup
	$(PY) -m stack up --demo --couriers $(COURIERS) --vehicles $(VEHICLES) \
		--orders-per-minute $(RATE) --time-scale $(TIME_SCALE) $(if $(SEED),--seed $(SEED))

# The stack and the processes without the simulated fleet.
run-empty: setup
	$(PY) -m stack up

stop:
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "nothing to stop: no .venv"; fi

status: setup
	$(PY) -m stack status

setup:
	@bash scripts/setup.sh

# What the suite needs beyond running: Chromium and firebase-tools (several minutes the first time).
test-setup:
	@bash scripts/setup.sh --test

test: test-setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy .

pytest: test-setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*; do if [ -x "$$b" ]; then echo "== $$b"; "$$b" || exit 1; fi; done

clean: stop
	rm -rf .var
