# Two commands on a fresh machine: `make demo` and `make test` (both install first).
# VENV=/path/to/venv uses another virtual environment; PYTHON picks the interpreter that creates it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.humansd-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test test-all demo demo-ui lint format clean

install: $(STAMP)

# Re-runs only when the pinned requirements or the package metadata change (quick no-op otherwise).
$(STAMP): requirements.txt requirements-mediapipe.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-mediapipe.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mediapipe==0.10.21
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

demo: install
	$(PY) scripts/demo.py --outdir outputs/demo

lint: install
	$(PY) -m ruff check ldm scripts tests comparison_models benchmarks

format: install
	$(PY) -m ruff format ldm scripts tests comparison_models benchmarks

clean:
	rm -rf outputs .pytest_cache

demo-ui: install
	$(PY) scripts/gradio/pose2img.py
