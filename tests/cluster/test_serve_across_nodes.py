"""The app on two Ray nodes, one replica of CF, retrieval and the ingress on each (``max_replicas_per_node``
from the config), two of the LLM query writer (CPU engine); the worker node removed hard under a bounded
load, then a fresh node added. Served through Serve's HTTP proxy on the head."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.serve.conftest import Load, app_args, poll, running, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PORT = 8128
BASE = f"http://127.0.0.1:{PORT}"
APP = "spread"
SPREAD = ("CFDeployment", "RetrievalDeployment", "RerankDeployment")


def placement() -> dict[str, list[str]]:
    """One reading of Serve's state: the node ids of each deployment's RUNNING replicas."""
    return {d: sorted(r.node_id for r in replicas) for d, replicas in running(APP).items()}


def pct(ms: list[float], q: float) -> float:
    return float(np.percentile(ms, q)) if ms else float("nan")


def test_replicas_spread_over_both_nodes_and_survive_losing_one(two_nodes, cluster_artifacts):
    from ray import serve

    from serve.app import build_app

    two, spread = {"num_replicas": 2}, {"num_replicas": 2, "max_replicas_per_node": 1}
    args = app_args(
        cluster_artifacts,
        engine={"backend": "auto"},  # vLLM on CPU here, vLLM on CUDA on a GPU cluster
        timeouts={"cf": 10.0, "retrieval": 10.0, "retries": 1},
        deployments={"QueryDeployment": two} | {d: spread for d in SPREAD},
    )
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(args), name=APP, route_prefix="/")
    try:
        wait_ready("", base=BASE)
        head, worker = two_nodes.head.node_id, two_nodes.worker.node_id
        before = placement()
        for d in SPREAD:
            assert before[d] == sorted([head, worker]), f"{d} not one replica per node: {before[d]}"
        assert len(before["QueryDeployment"]) == 2

        with Load("", base=BASE) as load:
            time.sleep(8)
            t_lost = time.monotonic()
            two_nodes.cluster.remove_node(two_nodes.worker, allow_graceful=False)
            on_head, lost_s = poll(placement, lambda r: all(r[d] == [head] for d in SPREAD), 120)
            time.sleep(max(0.0, 20 - (time.monotonic() - t_lost)))  # the loss window: 20 s after the removal
            t_added = time.monotonic()
            new = two_nodes.add_worker().node_id
            full, back_s = poll(placement, lambda r: all(r[d] == sorted([head, new]) for d in SPREAD)
                                          and len(r["QueryDeployment"]) == 2, 300)  # fmt: skip
            time.sleep(3)
        before_ms = [ms for t, ms in load.samples if t < t_lost]
        during_ms = [ms for t, ms in load.samples if t_lost <= t < t_added]
        print(
            f"\nnode loss under load: {load.ok + load.failed} requests, {load.failed} failed, {load.retried} retried "
            f"by the client (first tries: {load.retried_errors[:5]}); p50/p99 before {pct(before_ms, 50):.0f}/"
            f"{pct(before_ms, 99):.0f} ms, during {pct(during_ms, 50):.0f}/"
            f"{pct(during_ms, 99):.0f} ms; all on the head {lost_s:.1f} s after the removal; full replica "
            f"count {back_s:.1f} s after a new node joined; errors {load.errors[:5]}"
        )  # fmt: skip
        assert all(on_head[d] == [head] for d in SPREAD), f"replicas left on a lost node: {on_head}"
        assert all(full[d] == sorted([head, new]) for d in SPREAD), f"not back to one per node: {full}"
        assert load.failed == 0, load.errors[:10]
        assert len(during_ms) > 20 and load.ok > 100
    finally:
        serve.shutdown()
