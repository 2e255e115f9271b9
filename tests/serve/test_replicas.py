"""Kill one replica of each deployment in turn (two replicas each) under a steady bounded load; both
retrieval replicas are replaced, and their replacements still recommend an item added online before."""

from __future__ import annotations

import time

import pytest

from .conftest import Load, app_args, http, running_replicas, wait_for_replacement, wait_ready
from .test_online_items import NEW, SCIFI

pytestmark = [pytest.mark.ray, pytest.mark.slow]
APP = "ha"
DEPLOYMENTS = ("CFDeployment", "RetrievalDeployment", "QueryDeployment", "RerankDeployment")


def test_killing_a_replica_of_each_deployment_loses_no_request(serve_url, serve_artifacts):
    import ray
    from ray import serve

    from serve.app import build_app

    two = {"num_replicas": 2}
    # generous branch timeouts: a replica starting up (model load, query warm-up) takes both cores of this
    # box for seconds, and a late branch would count as a degraded answer here
    timeouts = {"cf": 10.0, "retrieval": 10.0, "retries": 1}
    args = app_args(serve_artifacts, timeouts=timeouts, deployments={d: two for d in DEPLOYMENTS})
    serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
    wait_ready(f"/{APP}")
    assert http("POST", f"/{APP}/items", {"items": [NEW]})[0] == 200  # in the store's catalog log
    first = {d: set(running_replicas(APP, d)) for d in DEPLOYMENTS}
    killed = []
    try:
        with Load(f"/{APP}") as load:
            time.sleep(2)
            for deployment in (*DEPLOYMENTS, "RetrievalDeployment"):  # the second retrieval replica too
                before = running_replicas(APP, deployment)
                assert len(before) == 2, before
                victim = min(first[deployment] - set(killed))  # one that ran before the addition
                ray.kill(ray.get_actor(before[victim], namespace="serve"), no_restart=True)
                killed.append(victim)
                after = wait_for_replacement(APP, deployment, victim)
                assert len(after) == 2 and victim not in after, (
                    f"{deployment} did not get its second replica back: RUNNING {sorted(after)}, killed {victim}"
                )
                time.sleep(2)
        print(f"\nreplica kills {killed}: {load.ok} ok, {load.failed} failed, {load.retried} retried by "
              f"the client; errors seen: {load.errors[:5]}")  # fmt: skip
        assert load.failed == 0, load.errors[:10]
        assert load.ok > 100
        # every retrieval replica now started after the addition: it read the log before it was ready
        status, out = http("POST", f"/{APP}/recommend", {"history": SCIFI, "k": 10})
        got = {i["item_id"]: i for i in out["items"]}.get(NEW["item_id"]) if status == 200 else None
        assert got is not None and got["retrieval_rank"] <= 3 and got["cf_rank"] is None, out
    finally:
        serve.delete(APP)
