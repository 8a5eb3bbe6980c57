# `make demo` and `make test` set up .venv on first use (then reuse it) and run.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raypipe-installed
# torch first, pinned: where a local CPU wheel of 2.13.0 exists (these dev/CI machines) pip takes
# it in seconds; elsewhere it is PyPI's default (CUDA) build, which is what a GPU user wants.
TORCH ?= torch==2.13.0
QUIET_PIP := sed -u '/is ignored: it is neither a file nor a directory/d'

.PHONY: demo test setup clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | $(QUIET_PIP)
	# overcomplete 0.3.0 declares torchvision/timm/opencv it never needs for dictionaries and would
	# drag in a 5 GB CUDA torch: install it without its declared deps (README, "Installing").
	$(BIN)/python -m pip install -q --no-deps overcomplete==0.3.0 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/raypipe demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python scripts/bench_extract.py

clean:
	rm -rf $(VENV) runs .pytest_cache
