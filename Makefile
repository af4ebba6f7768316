# medgemma-serve: the menu. Each target is one command a person could type.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv manages .venv/; installed from PyPI if missing.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# cuda if an NVIDIA GPU answers, else cpu. Override: make serve DEVICE=cpu
DEVICE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
EXTRA := $(if $(filter cuda,$(DEVICE)),gpu,cpu)
PY := .venv/bin/python
# cuda: the config sized for the GPU nvidia-smi reports (H200, H100, else the L4 sizing), which
# `python -m serve pick-config` prints at recipe time, once .venv/ exists, with its reason.
CONFIG ?= $(if $(filter cuda,$(DEVICE)),$$($(PY) -m serve pick-config),configs/deployments/cpu-tiny.yaml)
SHOWN_CONFIG = $(if $(findstring pick-config,$(CONFIG)),the config that fits this GPU (python -m serve pick-config),$(CONFIG))
# yes: `make install` also installs Debian's prometheus, orthanc and nginx-light with apt-get
# when root.
# Skip: make install APT=no
APT ?= yes
ARGS ?=

.PHONY: help install prometheus orthanc nginx pacs serve monitor dry-run test test-fast test-unit lint bench baseline profile tiny-model clean

help:
	@echo "make serve     serve $(SHOWN_CONFIG) (device: $(DEVICE)) on http://127.0.0.1:8000/v1"
	@echo "make monitor   make serve, plus Prometheus on http://127.0.0.1:9090 scraping it (alerts loaded)"
	@echo "make test      install what is missing, run the whole test suite (what CI runs)"
	@echo "make test-fast the same without the slow tests (extra servers: verify, launcher, TP=2, replicas, Ray)"
	@echo "make pacs      a local PACS (Orthanc + DICOMweb) on http://127.0.0.1:8042/dicom-web with sample studies"
	@echo "make install   set up .venv/ with the $(EXTRA) extra, and apt-get prometheus, orthanc and nginx when root (APT=no skips them; idempotent)"
	@echo "make dry-run   print the vLLM command and environment for CONFIG"
	@echo "make bench     run the default CPU benchmark scenario"
	@echo "make baseline  deployment vs transformers generate, 3 alternating rounds (~25 min on 2 cores)"
	@echo "make profile   where the server's CPU goes, at one user and at saturation (py-spy)"
	@echo "make lint      ruff + mypy"

# The sync runs only when pyproject.toml or uv.lock changed since the last one, or .venv/
# is missing (the stamp .venv/.synced); `make test` then `make lint` sync once, not twice.
install: .venv/.synced
ifneq ($(APT),no)
	@$(MAKE) --no-print-directory prometheus
	@$(MAKE) --no-print-directory orthanc
	@$(MAKE) --no-print-directory nginx
endif

# --compile-bytecode: without .pyc files (this environment sets PYTHONDONTWRITEBYTECODE=1)
# each of the three processes of a vLLM server compiled vLLM and torch from source at
# every start (docs/operations.md, "Start-up time").
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --compile-bytecode --extra $(EXTRA) --extra ray
	@touch $@

# Debian's prometheus (for serve --monitor and its tests): installed when missing and root;
# otherwise a note with the command. Never fails the install.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) \
	      || echo "note: apt-get install prometheus failed; serve --monitor needs it"; \
	  else \
	    echo "note: prometheus is not installed and you are not root; for serve --monitor run: sudo apt-get install prometheus"; \
	  fi; }

# Debian's Orthanc and its DICOMweb plugin (for make pacs and the PACS tests): installed when
# missing and root; otherwise a note with the command. Never fails the install.
orthanc:
	@{ command -v Orthanc || test -x /usr/sbin/Orthanc; } >/dev/null 2>&1 \
	  && test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb) \
	      || echo "note: apt-get install orthanc orthanc-dicomweb failed; make pacs needs them"; \
	  else \
	    echo "note: orthanc is not installed and you are not root; for make pacs run: sudo apt-get install orthanc orthanc-dicomweb"; \
	  fi; }

# Debian's nginx-light (the edge in front of a `replicas:` deployment: serve/edge; it has
# the auth_request module): installed when missing and root; otherwise a note with the
# command. Never fails the install.
nginx:
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) \
	      || echo "note: apt-get install nginx-light failed; a config with replicas: needs it"; \
	  else \
	    echo "note: nginx is not installed and you are not root; for a config with replicas: run: sudo apt-get install nginx-light"; \
	  fi; }

pacs: install
	$(PY) -m serve pacs $(ARGS)

serve: install
	$(PY) -m serve --config $(CONFIG) $(ARGS)

monitor: install
	$(PY) -m serve --config $(CONFIG) --monitor $(ARGS)

dry-run: install
	$(PY) -m serve --config $(CONFIG) --dry-run $(ARGS)

# On 2 pytest-xdist workers by default: the tests of each server on one worker
# (tests/workers.py), each worker's ports from its own range (MEDGEMMA_PORTS) and its
# servers' model threads on its own core (VLLM_CPU_OMP_THREADS_BIND). Serially:
# make test XDIST="-n 0". Figures, serial and parallel: README.md, "More make targets".
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: install
	$(PY) -m pytest $(XDIST) $(ARGS)

test-fast: install
	$(PY) -m pytest $(XDIST) -m "not slow" $(ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy serve clients benchmarks

bench: install
	$(PY) -m benchmarks run --scenario configs/scenarios/bench-cpu.yaml --start-server $(ARGS)

baseline: install
	$(PY) -m benchmarks baseline --scenario configs/scenarios/bench-baseline.yaml $(ARGS)

profile: install
	$(PY) -m benchmarks profile --scenario configs/scenarios/bench-baseline.yaml --start-server $(ARGS)

tiny-model: install
	$(PY) -m serve standin --preset tiny

clean:
	rm -rf .cache logs results .pytest_cache .mypy_cache .ruff_cache
