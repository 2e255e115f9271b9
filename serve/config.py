"""The Serve application's settings: one typed model, read from the ``args`` of ``serve_config.yaml``.

Every field has a default that serves ``artifacts/ml-100k`` on one machine. Unknown fields are an error
that names them, so a typo in the YAML never passes silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.branch import RowMode, default_row_mode
from data_prep.artifacts import ArtifactPaths

DEPLOYMENTS = ("QueryDeployment", "RetrievalDeployment", "CFDeployment", "RerankDeployment")
TOKEN_ENV = "Q2REC_EVENTS_TOKEN"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentOptions(Strict):
    """Replicas and resources of one deployment (passed to ``.options()``)."""

    num_replicas: int | Literal["auto"] = 1
    num_cpus: float = Field(0.0, ge=0)  # 0: Serve's default of 1 CPU per replica hangs a 2-core box
    num_gpus: float = Field(0.0, ge=0)
    memory: int | None = Field(None, gt=0)  # bytes Ray reserves for each replica (cluster profiles)
    max_ongoing_requests: int = Field(100, ge=1)
    # requests waiting for a replica beyond this are shed at once with 503 + Retry-After (-1: no limit)
    max_queued_requests: int = Field(-1, ge=-1)
    retry_after_s: float = Field(1.0, ge=0)  # the Retry-After of a shed request
    max_replicas_per_node: int | None = Field(None, ge=1)  # 1 spreads the replicas over the nodes
    autoscaling_config: dict[str, Any] | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            actor["memory"] = self.memory
        if self.env_vars:
            actor["runtime_env"] = {"env_vars": self.env_vars}
        out: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": actor}
        if self.max_queued_requests >= 0:
            from ray.serve.config import BackpressureConfig

            out["max_queued_requests"] = self.max_queued_requests
            out["backpressure_config"] = BackpressureConfig(status_code=503, retry_after_s=self.retry_after_s)
        if self.max_replicas_per_node is not None:
            out["max_replicas_per_node"] = self.max_replicas_per_node
        if self.autoscaling_config is not None:
            out["autoscaling_config"] = self.autoscaling_config
        else:
            out["num_replicas"] = self.num_replicas
        return out


def _default_deployments() -> dict[str, DeploymentOptions]:
    llm_env = {"OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    return {
        "QueryDeployment": DeploymentOptions(max_ongoing_requests=64, env_vars=llm_env),
        "RetrievalDeployment": DeploymentOptions(env_vars={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}),
        "CFDeployment": DeploymentOptions(env_vars={"OMP_NUM_THREADS": "1"}),
        # the ingress sheds what it cannot start soon (bench/overload.py: on 2 cores, 4 + 4 kept the accepted
        # requests' p99 at 64 clients 3.4x below queueing's; deeper queues waited longer than queueing)
        "RerankDeployment": DeploymentOptions(max_ongoing_requests=4, max_queued_requests=4),
    }


class EngineSettings(Strict):
    """The query writer's LLM. ``backend: none`` serves metadata-built queries only (no LLM replica work)."""

    backend: Literal["auto", "vllm", "transformers", "openai", "none"] = "auto"
    model: str | None = None  # None: the packaged SmolLM2-135M-Instruct
    max_model_len: int = 2048
    base_url: str = "http://127.0.0.1:8000/v1"
    extra: dict[str, Any] = Field(default_factory=dict)
    max_pending: int = Field(64, ge=1)  # generations pending at once per ingress; beyond, the fallback serves
    max_pending_anonymous: int = Field(4, ge=0)  # of those, for histories sent without a user id


class Timeouts(Strict):
    """Per-branch budgets in seconds. ``llm`` is how long a request waits for a query being written: 0
    serves at once with the cached or metadata-built query while the LLM writes in the background."""

    llm: float = Field(0.0, ge=0)
    cf: float = Field(1.0, gt=0)
    retrieval: float = Field(1.0, gt=0)
    retries: int = Field(1, ge=0, le=3)  # per branch, after a failure (e.g. a replica died)
    # an ingress replica takes traffic only once both branches answer within their budgets, or after this
    # long (then /healthz names the branch that does not answer); 0 does not wait
    warmup: float = Field(300.0, ge=0)


class StoreSettings(Strict):
    """Where the online state lives (``serve.store``): events appended to histories, queries written online."""

    backend: Literal["sqlite", "redis", "memory"] = "sqlite"  # memory: per replica, lost on restart
    path: str | None = None  # sqlite; default <artifacts>/online/state.sqlite3
    url: str | None = None  # redis://host:port/db; default $Q2REC_REDIS_URL
    namespace: str | None = None  # redis key prefix; default the artifacts directory's name
    timeout_s: float = Field(0.5, gt=0)  # a store slower than this counts as down
    query_ttl_s: int = Field(30 * 86400, ge=1)  # redis: how long an online-written query is kept
    max_events: int = Field(1000, ge=1)  # online items kept per user: beyond it the oldest are dropped
    event_id_ttl_s: int = Field(86400, ge=1)  # how long an event id is remembered (a repeat is stored once)


class ServeAppConfig(Strict):
    artifacts: str = "artifacts/ml-100k"  # one dataset's artifacts directory
    cf_model: str = "sasrec"
    fusion_path: str | None = None  # default: <artifacts>/fusion.json; built-in defaults when absent
    # the retrieval query's weights (actors.retrieval_query.RetrievalWeights: last, recent, llm, enriched);
    # None: as the search tuned them (fusion.json "weights"), else the last item's vector alone
    retrieval_weights: dict[str, float] | None = None
    query_samples: int = Field(1, ge=1, le=16)  # LLM queries written per new history (QuerySettings.samples)
    branch_n: int | None = Field(None, ge=1)  # items per branch; None: the fusion config's n
    # what a branch sends beside its top-n: the catalog-wide score row, its statistics, or nothing;
    # auto: by catalog size (actors.branch.default_row_mode)
    branch_rows: Literal["auto", "full", "stats", "topn"] = "auto"
    intent_weight: float = Field(0.5, ge=0, le=1)  # weight of a free-text intent against the user query
    intent_max_alpha: float = Field(0.5, ge=0, le=1)  # with an intent, CF weighs at most this (1: no cap)
    branch_batch_size: int = Field(16, ge=1)  # CF / retrieval calls merged into one model call (1: none)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    store: StoreSettings = Field(default_factory=StoreSettings)
    query_cache_size: int = Field(200_000, ge=0)
    intent_cache_size: int = Field(10_000, ge=1)  # encoded free-text intents kept per retrieval replica
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_history: int = Field(5_000, ge=1)
    max_query_chars: int = Field(500, ge=1, le=10_000)  # a free-text intent's length limit
    api_docs: bool = True  # the OpenAPI page at /docs (files shipped with the package, nothing from a CDN)
    events_token: str | None = None  # default: $Q2REC_EVENTS_TOKEN
    # token: events (every write) need the token above, and the app refuses to start without one;
    # none: events need no token (for one machine on 127.0.0.1 only; the ingress says so in its log)
    auth: Literal["token", "none"] = "token"
    deployments: dict[str, DeploymentOptions] = Field(default_factory=_default_deployments)

    @field_validator("deployments")
    @classmethod
    def _known_deployments(cls, value: dict[str, DeploymentOptions]) -> dict[str, DeploymentOptions]:
        unknown = sorted(set(value) - set(DEPLOYMENTS))
        if unknown:
            raise ValueError(f"unknown deployment(s) {unknown}; known: {list(DEPLOYMENTS)}")
        return _default_deployments() | value

    def check_auth(self) -> None:
        """Raise unless writes are guarded by a token or the config says ``auth: none`` (called where the
        app is built and where events are served, which may read ``$Q2REC_EVENTS_TOKEN`` differently)."""
        if self.auth == "token" and self.token() is None:
            raise ValueError(
                f"auth: 'token' needs events_token or ${TOKEN_ENV}, and neither is set; set one, or "
                "'auth: none' to accept events from anyone who reaches the port (one machine, 127.0.0.1)"
            )

    @property
    def root(self) -> Path:
        return Path(self.artifacts)

    @property
    def fusion_file(self) -> Path:
        return Path(self.fusion_path) if self.fusion_path else ArtifactPaths(self.root).fusion

    def rows_for(self, n_items: int) -> RowMode:
        """The row mode of the branches for a catalog of ``n_items``."""
        return default_row_mode(n_items) if self.branch_rows == "auto" else self.branch_rows

    def token(self) -> str | None:
        return self.events_token or os.environ.get(TOKEN_ENV) or None
