"""Kill one replica of each deployment in turn (two replicas each) under a steady bounded load."""

from __future__ import annotations

import random
import threading
import time

import pytest

from .conftest import app_args, http, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
APP = "ha"
DEPLOYMENTS = ("CFDeployment", "RetrievalDeployment", "QueryDeployment", "RerankDeployment")


def running_replicas(deployment: str) -> frozenset[str]:
    """One reading of Serve's state: the actor names of the deployment's replicas that are RUNNING now."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ReplicaState, ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    replicas = details.applications[APP].deployments[deployment].replicas
    return frozenset(r.actor_name for r in replicas if r.state == ReplicaState.RUNNING)


def wait_for_replacement(deployment: str, killed: str, timeout: float = 300.0) -> frozenset[str]:
    """Poll until one reading has 2 RUNNING replicas, none of them the killed one; return that reading
    (or the last one at the deadline), so the caller asserts on exactly what the loop saw. The deadline is
    generous: on a 2-core box under load a new retrieval replica (encoder load, stored queries encoded)
    was measured to take 171 s to start."""
    deadline = time.monotonic() + timeout
    while True:
        reading = running_replicas(deployment)
        if (len(reading) == 2 and killed not in reading) or time.monotonic() > deadline:
            return reading
        time.sleep(0.5)


class Load:
    """``clients`` threads, each sending one request at a time with a pause: a bounded, steady load.
    A request that fails is retried once by the client (as an HTTP client of a replicated service does)."""

    def __init__(self, clients: int = 3, pause: float = 0.02) -> None:
        self.stop = threading.Event()
        self.ok = self.failed = self.retried = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(pause, i)) for i in range(clients)]

    def run(self, pause: float, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            body = {"user_id": str(rng.randint(3, 943)), "k": 10}
            result = self.once(body)
            if result is None:
                with self.lock:
                    self.retried += 1
                result = self.once(body)
            with self.lock:
                if result is None:
                    self.failed += 1
                elif result["degraded"]:
                    self.failed += 1
                    self.errors.append(f"degraded {result['degraded']}")
                else:
                    self.ok += 1
            time.sleep(pause)

    def once(self, body):
        try:
            status, out = http("POST", f"/{APP}/recommend", body, timeout=10)
        except OSError as exc:
            self.errors.append(repr(exc))
            return None
        if status != 200:
            self.errors.append(f"{status} {out}")
            return None
        return out

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


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
    killed = {}
    try:
        with Load() as load:
            time.sleep(2)
            for deployment in DEPLOYMENTS:
                before = running_replicas(deployment)
                assert len(before) == 2, before
                victim = min(before)
                ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
                killed[deployment] = victim
                after = wait_for_replacement(deployment, victim)
                assert len(after) == 2 and victim not in after, (
                    f"{deployment} did not get its second replica back: RUNNING {sorted(after)}, killed {victim}"
                )
                time.sleep(2)
        print(f"\nreplica kills {list(killed)}: {load.ok} ok, {load.failed} failed, {load.retried} retried by "
              f"the client; errors seen: {load.errors[:5]}")  # fmt: skip
        assert load.failed == 0, load.errors[:10]
        assert load.ok > 100
    finally:
        serve.delete(APP)
