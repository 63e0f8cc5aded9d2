# The README's quick start: `make up` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down status test test-full lint bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache
