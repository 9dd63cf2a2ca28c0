# dlspec — set-up, tests and demo. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the package with its dependencies, and install the
# system programs tinygrad's CPU device (clang) and Graphviz (dot) need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all setup sysdeps test test-fast demo lint fmt bench docs clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: sysdeps $(STAMP)

sysdeps:
	@bash .ci/sysdeps.sh

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

demo: setup
	@bash bench/demo.sh

lint: setup
	$(BIN)/ruff check dlspec tests bench
	$(BIN)/ruff format --check dlspec tests bench

fmt: setup
	$(BIN)/ruff format dlspec tests bench
	$(BIN)/dlspec fmt specs/*.dl

bench: setup
	$(BIN)/python bench/frontend.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
