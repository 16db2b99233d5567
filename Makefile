# The README's two commands: `make study` (the main job) and `make test` (what CI runs).
# Both create .venv when it is missing and (re)install when pyproject.toml changed.
# The Pythons the README promises, newest first (tests/test_environment.py keeps this list, pyproject.toml's
# requires-python and environment.yml in step). .venv is made with the newest one that runs here;
# `make test PYTHON=python3.11` (or PYTHON in the environment, as .ci/run does) chooses another.
SUPPORTED_PYTHONS := 3.13 3.12 3.11
PYTHON_ORIGIN     := $(origin PYTHON)
ifeq ($(PYTHON_ORIGIN),undefined)
# Run each candidate rather than look it up on PATH: a pyenv shim exists for every installed version
# but fails unless that version is active; one without ensurepip (Debian without python3.x-venv) cannot make a venv.
PYTHON := $(firstword $(foreach v,$(SUPPORTED_PYTHONS),$(shell python$(v) -c "import ensurepip, venv; ensurepip.version()" >/dev/null 2>&1 && echo python$(v))))
endif
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PARAMS ?= params/quick.yaml

.PHONY: study test install lab benchmarks clean-outputs which-python

$(PY):
	@if [ -z "$(PYTHON)" ]; then \
	  echo "make: no supported Python found: none of $(foreach v,$(SUPPORTED_PYTHONS),python$(v)) runs here; install one, or set PYTHON=/path/to/python3.x" >&2; \
	  exit 1; fi
	@echo "make: creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1)), $(if $(filter undefined,$(PYTHON_ORIGIN)),the newest of Python $(SUPPORTED_PYTHONS) found here; PYTHON=python3.x chooses another,set by PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo "make: installing into $(VENV) ($$($(PY) --version 2>&1))"
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

install: $(STAMP)

study: $(STAMP)
	$(PY) -m helpers study $(PARAMS)

test: $(STAMP)
	@echo "make: testing with $(VENV) ($$($(PY) --version 2>&1))"
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider -n 2 --durations=15

# Regenerates benchmarks/README.md's training tables (about 17 min on a 2-core CPU; run it on an idle machine).
benchmarks: $(STAMP)
	MAKE_BENCHMARKS=1 $(PY) benchmarks/bench_training.py --update-readme --json benchmarks/bench_training.json

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/*/

# Which Python a new .venv would be made with, and which one .venv has (a .venv is kept: rm -rf .venv to change).
which-python:
	@echo "PYTHON=$(or $(PYTHON),(none)) ($(if $(filter undefined,$(PYTHON_ORIGIN)),newest of $(SUPPORTED_PYTHONS) that runs here,set by PYTHON)): $(if $(PYTHON),$$($(PYTHON) --version 2>&1),none of python$(subst $() , python,$(SUPPORTED_PYTHONS)) runs here)"
	@if [ -x $(PY) ]; then echo "$(VENV): $$($(PY) --version 2>&1)"; else echo "$(VENV): not created yet"; fi
