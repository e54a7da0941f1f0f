# fleetpulse: `make run` starts the local stack, `make test` runs the full suite.
SHELL := /bin/bash
PY := .venv/bin/python
SETUP_STAMP := .venv/.fleetpulse-installed

.PHONY: run test stop status setup lint typecheck pytest bench clean

run: setup
	$(PY) -m stack up

stop:
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "nothing to stop: no .venv"; fi

status: setup
	$(PY) -m stack status

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy .

pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*; do if [ -x "$$b" ]; then echo "== $$b"; "$$b" || exit 1; fi; done

clean: stop
	rm -rf .var
