# The two commands of the README: `make tiny` (set up, run the tiny DAG end to end) and
# `make test` (set up, run the tests). Both install into .venv from scratch when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart tiny test clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first: a bare torch requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	# Every other package at the version of constraints.txt: the tiny numbers depend on them.
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	# EvalPlus's sandbox without its API clients (its checker's imports are in pyproject.toml).
	$(BIN)/pip install -q --no-deps evalplus==0.3.1
	touch $@

setup: $(BIN)/.installed

# The first look: the tiny math DAG with standard OPD only (3 seeds), a few minutes.
quickstart: setup
	$(BIN)/snakemake --cores all --config 'tasks=[math]' 'methods=[opd]'

tiny: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf results .snakemake
