# The README's quick start: `make up` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down status test test-full lint bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/smoke up

down: $(STAMP)
	$(BIN)/smoke down

status: $(STAMP)
	$(BIN)/smoke status

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-full: $(STAMP)
	$(BIN)/python -m pytest --full

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run_all

# Every guarantee's tests, long scenarios included; RELIABILITY.md is rendered from what they measured.
RELIABILITY_TESTS := tests/test_actors_reliability.py tests/test_serve_reliability.py tests/test_actors_recovery.py \
	tests/test_actors_broker_watch.py tests/test_actors_state.py tests/test_actors_dlq_metrics.py \
	tests/test_actors_e2e.py tests/test_serve_api.py tests/test_serve_lifecycle.py tests/test_ingest_validation.py

reliability: $(STAMP)
	$(BIN)/python -m pytest --full $(RELIABILITY_TESTS) --reliability-out bench/reliability.json
	$(BIN)/python -m bench.reliability_report

clean:
	rm -rf $(VENV) .pytest_cache
