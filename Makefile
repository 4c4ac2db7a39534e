# autofix-ml task runner. `make up` runs the whole system; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: up test lint format bench install install-test sql clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## up: install, migrate and run all four services (Ctrl-C stops them)
up: install
	$(BIN)/autofix-ml up

## test: install the test extras and run the whole suite (real SQLite and PostgreSQL) on two
## worker processes, a test file per worker (pytest-xdist); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## lint: ruff (lint + format check), mypy --strict on the packages, alembic check
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services
	DATABASE_URL=sqlite+aiosqlite:///$(CURDIR)/var/lint-check.db $(BIN)/autofix-ml db upgrade
	DATABASE_URL=sqlite+aiosqlite:///$(CURDIR)/var/lint-check.db $(BIN)/alembic -c migrations/alembic.ini check
	rm -f var/lint-check.db*

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark under bench/ (figures go to bench/RESULTS.md by hand)
bench: install-test
	$(BIN)/python -m bench.run_all

sql: install
	@$(BIN)/autofix-ml db sql

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
