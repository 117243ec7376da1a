# EdgeModel Operator: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVCLUSTER := $(PYTHON) hack/devcluster.py
KUBECONFIG_PATH := $(CURDIR)/.devcluster/kubeconfig
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k placement -x"
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the Debian packages the cluster and tests need (once)
	@hack/install-deps.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python venv with the operator and dev tools

.PHONY: tools
tools: ## Build the pinned Kubernetes, etcd and kwok binaries into ~/.cache (once)
	@hack/build-tools.sh >/dev/null

.PHONY: helm
helm: ## Build the pinned Helm 3 into ~/.cache (once)
	@hack/build-helm.sh >/dev/null

.PHONY: argocd
argocd: ## Build the pinned Argo CD and unpack Debian's redis into ~/.cache (once)
	@hack/build-argocd.sh >/dev/null

.PHONY: cosign
cosign: ## Build the pinned cosign into ~/.cache (once): the tests verify the operator's signatures with it
	@hack/build-cosign.sh >/dev/null

.PHONY: chart-crds
chart-crds: ## Copy crds/ into the Helm chart (run after changing the CRD)
	@hack/sync-chart-crds.sh

ACCELERATORS ?= cpu,gpu,npu
PLATFORMS ?= amd64,arm64
.PHONY: images
images: deps venv ## Build and publish the model-server images, one multi-arch index per accelerator, to REGISTRY (default: the local registry); ACCELERATORS=cpu,gpu,npu PLATFORMS=amd64,arm64
	@PY=$(PY) ACCELERATORS=$(ACCELERATORS) PLATFORMS=$(PLATFORMS) hack/images.sh

.PHONY: cluster-up
cluster-up: deps tools ## Start the local edge cluster (reuses a running one); FLEET=gpu=3,npu=3,cpu=6 REAL_NODES=1
	@$(DEVCLUSTER) up $(if $(FLEET),--fleet $(FLEET))

.PHONY: cluster-down
cluster-down: ## Stop the local edge cluster, Argo CD, Prometheus, the demo's operators, model store and image kit, and delete their state
	@$(PYTHON) hack/gitops.py down --quiet || true
	@$(PYTHON) hack/monitoring.py down --quiet || true
	@for f in .devcluster/*.pid; do [ -f "$$f" ] && kill "$$(cat "$$f")" 2>/dev/null; rm -f "$$f"; done; true
	@if [ -d .imagekit ]; then $(PYTHON) hack/imagekit.py down || true; fi
	@$(DEVCLUSTER) down

.PHONY: cluster-status
cluster-status: ## Show the cluster's processes and nodes
	@$(DEVCLUSTER) status

.PHONY: gitops-up
gitops-up: cluster-up helm argocd ## Start Argo CD next to the cluster: controllers, repo server, redis, a git daemon with the site repository
	@$(PYTHON) hack/gitops.py up

.PHONY: gitops-status
gitops-status: ## Show Argo CD's processes, repositories and Applications
	@$(PYTHON) hack/gitops.py status

.PHONY: gitops-down
gitops-down: ## Stop Argo CD (the cluster keeps running)
	@$(PYTHON) hack/gitops.py down

.PHONY: monitoring-up
monitoring-up: cluster-up venv helm ## Start (or reload) Prometheus next to the cluster: model servers and operators by Kubernetes discovery, the chart's alert rules; 127.0.0.1:<port base>+170
	@$(PY) hack/monitoring.py up

.PHONY: monitoring-status
monitoring-status: ## Show Prometheus and its scrape targets
	@$(PYTHON) hack/monitoring.py status

.PHONY: monitoring-down
monitoring-down: ## Stop Prometheus (the cluster keeps running)
	@$(PYTHON) hack/monitoring.py down

.PHONY: lint
lint: venv ## ruff (lint + format check), mypy and the import-linter contracts
	$(VENV)/bin/ruff check operator tests hack images/server bench
	$(VENV)/bin/ruff format --check operator tests hack images/server bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: format
format: venv ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix operator tests hack images/server bench
	$(VENV)/bin/ruff format operator tests hack images/server bench

.PHONY: unit
unit: venv ## Unit tests only (no cluster)
	$(PY) -m pytest tests -m "not e2e" $(PYTEST_ARGS)

.PHONY: test
test: deps venv tools helm argocd cosign lint ## Install what is needed, then lint and run every test (starts the cluster if needed)
	$(PY) -m pytest tests bench/test_bench_smoke.py $(PYTEST_ARGS)

.PHONY: faults
faults: venv tools helm ## The fault-injection suite alone (about 15 min, 5 of them the 1,500-node scenario; part of make test too): writes tests/faults/results.json and the README's reliability table
	FAULTS_RESULTS=tests/faults/results.json $(PY) -m pytest tests/faults $(PYTEST_ARGS); \
	  status=$$?; $(PY) tests/faults/report.py; exit $$status

SUITE ?= all
SIZE ?= full
.PHONY: bench
bench: venv tools ## Benchmarks on a cluster of their own (port base 18400), results in bench/results; SUITE=fleet|rollback|footprint|optimize|serving|images|realnode|all SIZE=tiny|full
	$(PY) bench/run.py --suite $(SUITE) --size $(SIZE) --out bench/results
	$(PY) bench/readme.py

.PHONY: demo
demo: venv cluster-up ## The main job: local edge cluster + operator reconciling the samples in examples/
	@PY=$(PY) hack/demo.sh

.PHONY: clean
clean: cluster-down ## Stop the cluster and remove the venv (the binary cache in ~/.cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
