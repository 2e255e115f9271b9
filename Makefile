# q2rec: `make demo` runs the main job end to end on MovieLens-100K; `make test` runs the tests.
# Both set everything up first (.venv, CPU torch pinned first, the packaged data). Setup is idempotent.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.q2rec-installed
ARTIFACTS ?= artifacts

export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AIR_NEW_OUTPUT := 0
export Q2REC_ARTIFACTS := $(ARTIFACTS)

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "==> setting up $(VENV) (first run takes a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -q "torch==2.13.0"
	$(PY) -m pip install --progress-bar on -e ".[dev]"
	$(PY) -m pip install --progress-bar on -q --no-deps "recbole==1.2.1"
	$(PY) -c "from data_prep.loaders import packaged_ml100k_dir; print('ML-100K files:', packaged_ml100k_dir())"
	touch $(STAMP)

demo: setup
	$(PY) -m data_prep.prepare --dataset ml-100k
	$(PY) -m tune.evaluate --dataset ml-100k --models pop,ease,sasrec --num-cpus 2 \
		--out $(ARTIFACTS)/ml-100k/evaluation.json

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/eval_speed.py

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
