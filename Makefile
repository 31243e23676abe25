# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KUBECTL := $(VENV)/bin/kubectl
# An explicit KUBECONFIG means "use that cluster"; otherwise the local test cluster.
KCFG := $(or $(KUBECONFIG),$(HOME)/.cache/modelops/cluster/admin.kubeconfig)

.PHONY: venv build components run test unit bench cluster-up cluster-down cluster-status clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml inference-image/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./inference-image
	touch $@

build: venv  ## build and cache the local cluster's binaries (once per version)
	$(PY) -m tests.cluster build

components: venv  ## the real test components: llama.cpp + SmolLM2, Ollama, Prometheus, Redis; the cluster's binaries and images (cached builds)
	$(PY) -m tests.components install
	$(PY) -m tests.cluster build
	$(PY) -m tests.images build

run: components  ## SmolLM2 answering from a real pod: cluster with its real node, images built here, the operator installed by the Helm chart
ifeq ($(KUBECONFIG),)
	$(PY) -m tests.cluster up
	$(PY) -m tests.quickstart
else
	# Your own cluster: the CRD, then the operator in the foreground against it (or install the chart: README).
	$(KUBECTL) --kubeconfig $(KCFG) apply --server-side --force-conflicts -f crds/
	KUBECONFIG=$(KCFG) $(PY) -m modelops run
endif

test: components  ## every tier; starts (and stops) the local cluster and components it needs
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m unit

bench: components  ## benchmarks (not tests): operator at scale vs Argo Rollouts, fairness, rollback latency, gateway overhead, response cache (each with --smoke: tests/integration/test_bench_smoke.py)
	$(PY) -m tests.components install nginx
	$(PY) -m tests.bench.operator_scale
	$(PY) -m tests.bench.fairness
	$(PY) -m tests.bench.rollback_latency
	$(PY) -m tests.bench.gateway
	$(PY) -m tests.bench.cache

cluster-up: venv
	$(PY) -m tests.cluster up
cluster-down: venv
	$(PY) -m tests.cluster down
cluster-status: venv
	$(PY) -m tests.cluster status

clean: cluster-down
	rm -rf $(VENV)
