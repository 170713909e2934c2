# `make run`: set up .venv and run the main job (distill the embedded digits set).
# TORCH_INDEX=<pip index>: take torch and torchvision from that index first, e.g. the CPU-only wheels
# (no CUDA libraries, no GPU needed): make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Unset (the default): torch comes from PyPI with the package (its Linux wheels are CUDA builds).
# It applies when .venv is set up: `make clean` first to switch an existing .venv.
# `make test`: set up .venv, check the layer contract (lint-imports) and run the default test suite,
# SLURM integration test included (what .ci/run runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
TORCH_INDEX ?=

.PHONY: setup run test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifneq ($(TORCH_INDEX),)
	$(PIP) --index-url $(TORCH_INDEX) torch torchvision
	$(BIN)/python -m pip freeze | grep -E '^torch(vision)?==' > $(VENV)/torch-pins.txt
endif
	$(PIP) $(if $(TORCH_INDEX),-c $(VENV)/torch-pins.txt) -e '.[dev,browser]'
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
