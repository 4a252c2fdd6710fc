# crossres — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# `make run`: the 64 px teacher and a 4-epoch RIM of experiments/make_run/ (measured times in README.md); extra
# arguments for either fit, e.g. RIM_ARGS="--trainer.max_epochs 6 --trainer.check_val_every_n_epoch 6".
TEACHER_ARGS ?=
RIM_ARGS ?=
COMPARE_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-all lint format clean notebooks compare

help:  ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile --disable-pip-version-check -e '.[dev]'  # --no-compile: a third less install time
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## Create .venv and install crossres with its dependencies.

run: $(STAMP)  ## The main job on synthetic faces: HR teacher (reused when finished), a short RIM run beside it, its report.
	$(BIN)/crossres fit -c experiments/baseline.yaml -c experiments/make_run/teacher.yaml --name hr_teacher_64 \
		--ckpt_path auto $(TEACHER_ARGS)
	name=rim-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/crossres fit -c experiments/rim.yaml -c experiments/make_run/rim.yaml --name $$name $(RIM_ARGS) && \
	$(BIN)/crossres report runs/$$name --split val

test: $(STAMP)  ## Run the test suite (without tests marked slow).
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)  ## Run every test, slow ones included.
	$(BIN)/python -m pytest -q

notebooks: $(STAMP)  ## Execute notebooks/NN_*.py (tiny settings) into the .ipynb beside them.
	$(BIN)/python docs/scripts/execute_notebooks.py

compare: $(STAMP)  ## Train + test every method with one budget (--budget 3: 1 h on 2 CPU cores); COMPARE_ARGS="--budget 8 ...".
	$(BIN)/python benchmarks/compare_methods.py $(COMPARE_ARGS)

lint: $(STAMP)  ## ruff (lint + format check) and mypy on the package.
	$(BIN)/ruff check crossres tests benchmarks docs
	$(BIN)/ruff format --check crossres tests benchmarks docs
	$(BIN)/mypy crossres

format: $(STAMP)  ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix crossres tests benchmarks docs
	$(BIN)/ruff format crossres tests benchmarks docs

clean:  ## Remove build leftovers (keeps .venv and runs/).
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
