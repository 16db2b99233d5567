# The README's two commands: `make study` (the main job) and `make test` (what CI runs).
# Both create .venv when it is missing and (re)install when pyproject.toml changed.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PARAMS ?= params/quick.yaml

.PHONY: study test install lab benchmarks clean-outputs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

install: $(STAMP)

study: $(STAMP)
	$(PY) -m helpers study $(PARAMS)

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider --durations=15

# Regenerates benchmarks/README.md's training tables (about 17 min on a 2-core CPU; run it on an idle machine).
benchmarks: $(STAMP)
	MAKE_BENCHMARKS=1 $(PY) benchmarks/bench_training.py --update-readme --json benchmarks/bench_training.json

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/*/
