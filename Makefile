# rlhfkit — every target sets up .venv first (quick when it already exists).
PYTHON  ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.rlhfkit-installed
PYTEST   = $(BIN)/python -m pytest

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on disk; then the project with its [dev] extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/rlhf demo --preset tiny --out runs/demo

# ruff (lint + import order, configured in pyproject.toml) first: a lint error fails `make test`.
lint: setup
	$(BIN)/ruff check .

test: lint
	sh scripts/system-deps.sh
	$(PYTEST)

test-all: lint
	sh scripts/system-deps.sh --all
	$(PYTEST) -m ''

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache
