"""Branch deployments that misbehave on purpose, for the degradation tests (pickled by value, so the
replicas need not import the tests package)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
class HangingQuery:
    """The LLM never answers."""

    async def write(self, history: list) -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
class LateBranch:
    """Answers long after any sensible timeout."""

    async def score(self, request: Any) -> Any:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
class FailingBranch:
    def __init__(self) -> None:
        self.calls = 0

    async def score(self, request: Any) -> Any:
        self.calls += 1
        raise RuntimeError("branch is down")

    async def calls_seen(self) -> int:
        return self.calls
