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
class SlowBranch:
    """Answers after 3 s with an empty list: a request through it holds its ingress slot that long."""

    async def score(self, request: Any) -> Any:
        from actors.branch import BranchOutput

        await asyncio.sleep(3)
        return BranchOutput.empty(1)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
class FailingBranch:
    def __init__(self) -> None:
        self.calls = 0

    async def score(self, request: Any) -> Any:
        self.calls += 1
        raise RuntimeError("branch is down")

    async def calls_seen(self) -> int:
        return self.calls


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class SlowQuery:
    """An LLM writing one query at a time, ``seconds`` each; it logs, for each history, its last item's
    title and how many generations were waiting or being written when it arrived."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.log: list[tuple[str, int]] = []

    async def write(self, history: list) -> dict[str, Any]:
        ahead = self.waiting
        self.waiting += 1
        try:
            async with self.lock:
                await asyncio.sleep(self.seconds)
        finally:
            self.waiting -= 1
        title = history[-1].title if history else ""
        self.log.append((title, ahead))
        return {"texts": [f"more like {title}"], "source": "llm"}

    async def calls(self) -> list[tuple[str, int]]:
        return list(self.log)
