# Two commands on a fresh machine with only python3:
#   make demo   -> builds .venv, installs requirements.txt + the core, runs `detseg tour`
#   make test   -> the same venv plus requirements-test.txt, then lint, notebook sync check and pytest
# Installs are idempotent: a stamp file records that requirements were installed, and only a change of
# requirements*.txt or pyproject.toml reinstalls.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# Number of pytest workers: 2 cores here; `make test JOBS=1` runs serially.
JOBS ?= 2
# `make bench BENCH_ARGS="--case 05-summary --case 01-summary"` runs only those cases.
BENCH_ARGS ?=

.PHONY: demo test bench notebooks assets lint format clean venv help mutation

help:
	@echo "make demo       build .venv if needed and run 'detseg tour' (quick trained paths, results table)"
	@echo "make test       build .venv if needed, check lint and notebook sync, run the whole test suite"
	@echo "make bench      run the benchmark cases and re-render the README table"
	@echo "make notebooks  regenerate every .ipynb from its py:percent source, with outputs of a full run,"
	@echo "                and the README's table of lessons with their Colab badges"
	@echo "make assets     redraw the figures of assets/ (architecture diagrams) from their code"
	@echo "make lint       ruff check + format check"
	@echo "make mutation   mutmut on detseg.boxes / metrics / engine / data.validate (slow; not in make test)"
	@echo "make clean      remove .venv, data/ and runs/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=23.1" setuptools wheel

$(VENV)/.installed-run: requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed-run
	$(PIP) install -r requirements-test.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed-run
	$(BIN)/detseg tour

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m detseg.notebooks check
	MPLBACKEND=Agg DETSEG_SMOKE=1 $(BIN)/python -m pytest -n $(JOBS) --durations=30

bench: $(VENV)/.installed-test
	$(BIN)/detseg bench run $(BENCH_ARGS)
	$(BIN)/detseg bench render

notebooks: $(VENV)/.installed-test
	$(BIN)/python -m detseg.notebooks build --execute
	$(BIN)/python -m detseg.colab

assets: $(VENV)/.installed-run
	$(BIN)/python assets/make_assets.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Mutation testing of four core modules, each with its own tests (not part of `make test`; hours on
# 2 cores: MUTATION_ARGS="boxes --sample 60" for a part). Results: runs/mutation/, tests/MUTATION.md.
mutation: $(VENV)/.installed-test
	$(PIP) install "mutmut==3.8.1"
	nice -n 10 $(BIN)/python tests/mutation/run_mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) data runs
