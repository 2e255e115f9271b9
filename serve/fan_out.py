"""The ingress's calls to the CF and retrieval deployments: concurrent (``asyncio.gather``), each under its
own timeout with a retry after a failure (not after a timeout); a replica of another build (mid-rollout)
is asked again until the budget ends, never fused. A branch that fails or is late comes
back as a ``BranchFailed`` in its place, so the caller fuses whatever answered. The outcome of each
branch's latest call is kept (``health``), and ``warm`` waits until both branches answer in time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from actors.branch import BranchOutput
from serve.config import Timeouts
from serve.deployments import VersionMismatch

log = logging.getLogger("ray.serve")


class BranchFailed(Exception):
    pass


async def _await(response):
    return await response


async def _none():
    return None


class BranchFanOut:
    """Calls ``score`` on the CF and retrieval handles; ``counts`` gathers timeouts and errors by branch."""

    def __init__(self, cf, retrieval, timeouts: Timeouts, counts: Counter) -> None:
        self.handles = {"cf": cf, "retrieval": retrieval}
        self.timeouts = timeouts
        self.counts = counts
        # the latest call of each branch: answered in time or not, when, and why not
        self.latest: dict[str, dict[str, Any]] = {name: {"answering": False, "error": "not called yet"}
                                                  for name in self.handles}  # fmt: skip

    def health(self) -> dict[str, dict[str, Any]]:
        """Per branch: whether its latest call answered within its budget (and if not, why), and how long
        ago that call ended."""
        now = time.monotonic()
        return {name: {k: (round(now - v, 1) if k == "at" else v) for k, v in state.items()}
                for name, state in self.latest.items()}  # fmt: skip

    async def warm(self, requests: dict[str, Any], deadline_s: float) -> list[str]:
        """Call each branch with its request until it answers within its budget, for up to ``deadline_s``;
        returns the branches that never did."""
        stop = time.monotonic() + deadline_s

        async def until_answered(name: str) -> bool:
            while True:
                try:
                    await self.call(name, requests[name], {})
                    return True
                except BranchFailed:
                    if time.monotonic() >= stop:
                        return False
                    await asyncio.sleep(0.5)

        done = await asyncio.gather(*(until_answered(name) for name in self.handles))
        return [name for name, ok in zip(self.handles, done, strict=True) if not ok]

    async def call(self, name: str, request: Any, timings: dict[str, float]) -> BranchOutput:
        """One branch call under its timeout, retried after a failure; its wall time goes to ``timings``."""
        timeout = getattr(self.timeouts, name)
        t0 = time.perf_counter()
        deadline = t0 + timeout
        try:
            attempt = 0
            while True:
                response = self.handles[name].score.remote(request)
                try:
                    out = await asyncio.wait_for(_await(response), max(deadline - time.perf_counter(), 1e-3))
                    self.latest[name] = {"answering": True, "at": time.monotonic()}
                    return out
                except TimeoutError:
                    response.cancel()
                    self.counts[f"{name}_timeout"] += 1
                    raise BranchFailed(f"{name}: no answer within {timeout}s") from None
                except VersionMismatch as exc:  # a replica of another build, mid-rollout: ask again
                    self.counts[f"{name}_version_mismatch"] += 1
                    if time.perf_counter() >= deadline:
                        raise BranchFailed(f"{name}: {exc}") from exc
                except Exception as exc:
                    self.counts[f"{name}_error"] += 1
                    log.warning("%s branch failed (attempt %d): %r", name, attempt + 1, exc)
                    if attempt == self.timeouts.retries or time.perf_counter() >= deadline:
                        raise BranchFailed(f"{name}: {exc!r}") from exc
                    attempt += 1
        except BranchFailed as exc:
            self.latest[name] = {"answering": False, "at": time.monotonic(), "error": str(exc)[:300]}
            raise
        finally:
            timings[name] = round((time.perf_counter() - t0) * 1000, 2)

    async def both(
        self, cf_request: Any | None, retrieval_request: Any | None, timings: dict[str, float]
    ) -> tuple[BranchOutput | BaseException | None, BranchOutput | BaseException | None]:
        """Both branches at once; a branch without a request answers ``None``."""
        calls = [
            self.call(name, req, timings) if req is not None else _none()
            for name, req in (("cf", cf_request), ("retrieval", retrieval_request))
        ]
        t0 = time.perf_counter()
        cf, retrieval = await asyncio.gather(*calls, return_exceptions=True)
        timings["branches"] = round((time.perf_counter() - t0) * 1000, 2)
        return cf, retrieval
