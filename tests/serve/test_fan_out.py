"""The ingress's branch calls during a rollout, with handles that stand in for Serve's (no Ray): a replica of
another build is asked again until one of the request's build answers, never fused, and never counted as
a failure; a branch whose replicas are all of another build fails at the end of its budget."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest

from actors.branch import BranchOutput
from serve.config import Timeouts
from serve.deployments import CFRequest, VersionMismatch, check_version
from serve.fan_out import BranchFailed, BranchFanOut

ANSWER = BranchOutput(np.array([[1, 2]]), np.array([[0.9, 0.5]], dtype=np.float32))


class Replicas:
    """A deployment handle over replicas of the given builds, picked in turn (as a router might)."""

    def __init__(self, builds: list[str]) -> None:
        self.builds, self.calls = builds, 0
        self.score = self

    def remote(self, request):
        build = self.builds[self.calls % len(self.builds)]
        self.calls += 1

        async def answer():
            await asyncio.sleep(0.001)
            check_version(request, build)
            return ANSWER

        return Response(answer())


class Response:
    def __init__(self, coro) -> None:
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()

    def cancel(self) -> None:
        self.coro.close()


def test_a_replica_of_another_build_is_asked_again_and_never_fused():
    counts = Counter()
    cf = Replicas(["old", "old", "new"])
    fan = BranchFanOut(cf, Replicas(["new"]), Timeouts(cf=1.0, retries=0), counts)
    out = asyncio.run(fan.call("cf", CFRequest([1], [], 2, version="new"), {}))
    assert out is ANSWER and cf.calls == 3
    assert counts == Counter({"cf_version_mismatch": 2})  # not errors: retries stay for real failures
    assert asyncio.run(fan.call("cf", CFRequest([1], [], 2), {})) is ANSWER  # no version: any replica


def test_only_other_builds_left_fails_the_branch_at_its_budget():
    counts = Counter()
    fan = BranchFanOut(Replicas(["old"]), Replicas(["new"]), Timeouts(cf=0.05), counts)
    t0 = time.perf_counter()
    with pytest.raises(BranchFailed):  # at the budget: the last ask may end as a mismatch or a timeout
        asyncio.run(fan.call("cf", CFRequest([1], [], 2, version="new"), {}))
    assert time.perf_counter() - t0 < 1.0
    assert counts["cf_version_mismatch"] >= 2 and counts["cf_error"] == 0
    assert fan.health()["cf"]["answering"] is False


def test_the_check_names_both_builds():
    check_version(CFRequest([1], [], 2, version="a"), "a")
    with pytest.raises(VersionMismatch, match="^a request for build a reached a replica of build b$"):
        check_version(CFRequest([1], [], 2, version="a"), "b")
