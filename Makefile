# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv build run test unit cluster-up cluster-down cluster-status clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

build: venv  ## build and cache the local cluster's binaries (once per version)
	$(PY) -m tests.cluster build

run: venv  ## the operator's main job on the local cluster (starts it when no kubeconfig is given)
	$(PY) -m tests.cluster up

test: venv  ## every tier; starts (and stops) the local cluster it needs
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

cluster-up: run
cluster-down: venv
	$(PY) -m tests.cluster down
cluster-status: venv
	$(PY) -m tests.cluster status

clean: cluster-down
	rm -rf $(VENV)
