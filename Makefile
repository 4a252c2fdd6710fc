# crossres — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-all lint format clean

help:  ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## Create .venv and install crossres with its dependencies.

run: $(STAMP)  ## The main job on the embedded synthetic faces: train, then print the verification table.
	$(BIN)/crossres fit -c experiments/baseline.yaml --name baseline-$$(date +%Y%m%d-%H%M%S) $(RUN_ARGS)

test: $(STAMP)  ## Run the test suite (without tests marked slow).
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)  ## Run every test, slow ones included.
	$(BIN)/python -m pytest -q

lint: $(STAMP)  ## ruff (lint + format check) and mypy on the package.
	$(BIN)/ruff check crossres tests benchmarks docs
	$(BIN)/ruff format --check crossres tests benchmarks docs
	$(BIN)/mypy crossres

format: $(STAMP)  ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix crossres tests benchmarks docs
	$(BIN)/ruff format crossres tests benchmarks docs

clean:  ## Remove build leftovers (keeps .venv and runs/).
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
