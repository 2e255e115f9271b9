"""Roll a new build out under load: no failed request, no answer fusing two builds.

    q2rec deploy [--config serve/serve_config.yaml] [--dataset NAME] [--artifacts ROOT] [--name q2rec]

Serve replaces each deployment's replicas on its own, old ones first, so in an in-place update (``serve
deploy`` of a changed config) old ingress replicas outlive their build's branches: degraded answers and
503s (``bench/rollout.py``). A rolled-out app is three applications instead: ``<name>`` (the ingress and
the query writer, at the route prefix) and, per build, ``<name>-retrieval-<build>`` and
``<name>-cf-<build>`` (no route). A rollout

1. starts the new build's branch applications beside the old build's and waits until they are ready
   (each replica warms up in its constructor);
2. redeploys ``<name>`` with the new config, calling the new branches: Serve replaces the ingress replicas
   old first (one at a time with two or more), each new one ready once its build's branches answer,
   while the old ones keep calling the old build's branches;
3. once no old ingress replica is left, deletes the old build's branch applications.

Every answer comes from one build (branch replicas refuse requests of another, ``serve.deployments``).
With a single ingress replica Serve stops it before its replacement is ready, and requests wait for the
new one: run two or more (the cluster profile autoscales from 2). Redeploying the running build restarts
only the ingress and the query writer. The first run deploys the app in this form.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from serve.run import DEFAULT_CONFIG, app_args

log = logging.getLogger(__name__)
SHORT = {"RetrievalDeployment": "retrieval", "CFDeployment": "cf"}


def running_build(name: str) -> dict[str, Any] | None:
    """What the app ``name`` serves (``RerankDeployment.build_info``), or None when it does not run."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        if name not in serve.status().applications:
            return None
        return serve.get_app_handle(name).build_info.remote().result(timeout_s=30)
    except RayServeException:
        return None


def wait_until_replaced(name: str, deployment: str, timeout_s: float = 120.0) -> None:
    """Until ``deployment`` of ``name`` has no replica stopping (the old ones have drained) or the deadline."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = serve.status().applications[name].deployments[deployment].replica_states
        if not any(str(s).upper().endswith("STOPPING") for s, n in states.items() if n):
            return
        time.sleep(0.5)
    log.warning("%s: old %s replicas still stopping after %.0fs", name, deployment, timeout_s)


def rollout(args: dict[str, Any], name: str = "q2rec", route_prefix: str = "/") -> dict[str, Any]:
    """Deploy ``args`` as app ``name`` in the three steps above; the seconds each took, and the builds."""
    from ray import serve

    from serve.app import build_branch, build_split
    from serve.config import ServeAppConfig
    from serve.deployments import BranchRef
    from serve.state import serving_version

    build = serving_version(ServeAppConfig(**args))
    before = running_build(name)
    refs = {d: BranchRef(f"{name}-{short}-{build}", d) for d, short in SHORT.items()}
    t0 = time.perf_counter()
    for deployment, ref in refs.items():
        if ref.app not in (before or {}).get("branch_apps", []):
            serve.run(build_branch(args, deployment), name=ref.app, route_prefix=None)
    t1 = time.perf_counter()
    serve.run(build_split(args, refs["RetrievalDeployment"], refs["CFDeployment"]), name=name,
              route_prefix=route_prefix)  # fmt: skip
    wait_until_replaced(name, "RerankDeployment")
    t2 = time.perf_counter()
    old = [a for a in (before or {}).get("branch_apps", []) if a not in {r.app for r in refs.values()}]
    for app in old:
        serve.delete(app)
    return {"from": (before or {}).get("version"), "to": build, "branches_s": round(t1 - t0, 1),
            "ingress_s": round(t2 - t1, 1), "removed": old}  # fmt: skip


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the Serve config of the new build")
    ap.add_argument("--name", default="q2rec", help="the application's name")


def command(a: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    from runtime.ray_cluster import init_ray

    args = app_args(a.config, a.dataset, a.artifacts)
    init_ray(quiet=True)
    done = rollout(args, a.name)
    print(f"{a.name}: build {done['from']} -> {done['to']}: new branches ready in {done['branches_s']} s, "
          f"ingress replaced in {done['ingress_s']} s; removed {done['removed'] or 'nothing'}")  # fmt: skip
    return 0
