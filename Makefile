# `make run`: set up .venv and run the main job (distill the embedded digits set).
# `make test`: set up .venv, check the layer contract (lint-imports) and run the default test suite,
# SLURM integration test included (what .ci/run runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/distillscape-distill $(ARGS)

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "(not slow or slurm) and not docker" $(ARGS)

test-all: setup
	$(BIN)/python -m pytest -m "" $(ARGS)

bench: setup
	$(BIN)/python bench/bench_distill.py
	$(BIN)/python bench/bench_landscape.py
	$(BIN)/python bench/bench_rl_distill.py
	$(BIN)/python bench/bench_rl_landscape.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
