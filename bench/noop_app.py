"""A no-op composition of the same shape, for the latency benchmark: the same four deployments (query,
retrieval, CF, an HTTP ingress that fans out to retrieval and CF with ``asyncio.gather``), each returning
constants. What the real app costs above this is the cost of the models and the fusion."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

noop_app = FastAPI(title="q2rec no-op composition")
ITEMS = [{"item_id": str(i), "title": f"item {i}", "score": 1.0 / i, "cf_rank": i, "cf_score": 1.0,
          "retrieval_rank": i, "retrieval_score": 1.0} for i in range(1, 21)]  # fmt: skip


@serve.deployment
class NoopBranch:
    async def score(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ids": [], "scores": []}

    async def write(self, history: list) -> dict[str, Any]:
        return {"text": "", "source": "noop"}


@serve.deployment
@serve.ingress(noop_app)
class NoopIngress:
    def __init__(self, query, retrieval, cf) -> None:
        self.query, self.retrieval, self.cf = query, retrieval, cf

    @noop_app.post("/recommend")
    async def recommend(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.gather(self.cf.score.remote(body), self.retrieval.score.remote(body))
        k = int(body.get("k", 10))
        return {"user_id": body.get("user_id"), "items": ITEMS[:k], "query": {"text": "", "source": "noop"},
                "alpha": 0.5, "degraded": [], "timings_ms": {}}  # fmt: skip


def build_noop_app(args: dict[str, Any] | None = None) -> Application:
    opts = {"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": 100}
    branch = NoopBranch.options(**opts)
    return NoopIngress.options(**opts).bind(
        branch.options(name="NoopQuery").bind(), branch.options(name="NoopRetrieval").bind(),
        branch.options(name="NoopCF").bind(),
    )  # fmt: skip
