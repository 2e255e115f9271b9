"""A two-node Ray cluster on this machine, used the way a cluster is: ``make cluster-demo``.

    python scripts/cluster_demo.py [--artifacts artifacts] [--items 64] [--engine auto|none] [--keep]
    python scripts/cluster_demo.py --down      # what `make cluster-down` runs

1. ``ray start --head`` and ``ray start --address`` (a head and a worker node, each its own raylet and
   object store, with a ``head`` / ``worker`` resource);
2. catalog enrichment submitted as a Ray job (``ray job submit --working-dir .``) on the first ``--items``
   items, written under ``<artifacts>/cluster-demo`` (the demo's own artifacts stay as they are);
3. ``serve deploy`` of the one-machine profile on the demo's artifacts (``make demo`` first), with CF,
   retrieval and the ingress at 2 replicas and at most one per node, and the online state in a Redis
   started here (the config it deploys is written beside the job's output); then one request, one event
   and the answers of both ingress replicas after it, over HTTP;
4. where each replica runs (the state API), then everything is stopped (``--keep`` leaves it running).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GCS_PORT, DASHBOARD_PORT, HTTP_PORT, REDIS_PORT = 6390, 8275, 8010, 6391
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
# Ray's token comes from runtime.ray_cluster.apply_safe_env
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "RAY_AIR_NEW_OUTPUT": "0"}  # fmt: skip


def bin_(name: str) -> str:
    """A console script of this Python's environment (``ray``, ``serve``)."""
    return str(Path(sys.executable).with_name(name))


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(args), flush=True)
    return subprocess.run(args, check=check, env=os.environ | ENV, **kw)


def start_cluster() -> None:
    store = str(300 * 1024 * 1024)  # each node's object store: two nodes share 24 GiB with everything else
    run(bin_("ray"), "start", "--head", f"--port={GCS_PORT}", "--num-cpus=1", '--resources={"head": 1}',
        f"--object-store-memory={store}", "--include-dashboard=true", f"--dashboard-port={DASHBOARD_PORT}",
        "--disable-usage-stats")  # fmt: skip
    run(bin_("ray"), "start", f"--address=127.0.0.1:{GCS_PORT}", "--num-cpus=1", '--resources={"worker": 1}',
        f"--object-store-memory={store}", "--disable-usage-stats")  # fmt: skip


def enrich_job(artifacts: Path, items: int, engine: str) -> None:
    """Prepare a copy of ML-100K under ``<artifacts>/cluster-demo`` and enrich it as a Ray job."""
    root = (artifacts / "cluster-demo").resolve()
    shutil.rmtree(root, ignore_errors=True)  # the demo's own scratch: each run enriches from scratch
    run(sys.executable, "-m", "q2rec", "prepare", "--dataset", "ml-100k", "--artifacts", str(root))
    job = (
        f"q2rec-enrich-{int(time.time())}"  # the entrypoint's Python is this one; on a real cluster, `python`
    )
    submit = [bin_("ray"), "job", "submit", f"--address={DASHBOARD}", "--submission-id", job, "--no-wait",
              "--working-dir", str(ROOT), f"--runtime-env-json={json.dumps({'env_vars': ENV})}", "--",
              sys.executable, "-m", "q2rec", "enrich", "--dataset", "ml-100k", "--artifacts", str(root),
              "--limit", str(items), "--replicas", "2", "--batch-size", "16", "--engine", engine if engine != "none" else "auto"]  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the head's job agent comes up a little after `ray start` returns
        res = run(*submit, check=False, capture_output=True, text=True)
        if res.returncode == 0:
            break
        if "No available agent" not in res.stdout + res.stderr or time.monotonic() > deadline:
            raise SystemExit(f"error: the job was not accepted:\n{(res.stdout + res.stderr)[-3000:]}")
        time.sleep(2)
    run(bin_("ray"), "job", "logs", job, "--follow", f"--address={DASHBOARD}")
    from ray.job_submission import JobStatus, JobSubmissionClient

    status = JobSubmissionClient(DASHBOARD).get_job_status(job)
    if status != JobStatus.SUCCEEDED:
        raise SystemExit(f"error: job {job} ended {status}; its log is above")
    out = root / "ml-100k" / "items_enriched.parquet"
    import pandas as pd

    df = pd.read_parquet(out)
    print(f"enrichment job: {len(df)} rows, {df['item_id'].nunique()} unique, written to {out}")


def post(path: str, body: dict) -> tuple[dict, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read()), r.headers.get("x-q2rec-replica", "")


def deploy(artifacts: Path, engine: str, redis_url: str) -> None:
    doc = yaml.safe_load((ROOT / "serve" / "serve_config.yaml").read_text())
    doc["http_options"] = {"host": "127.0.0.1", "port": HTTP_PORT}
    args = doc["applications"][0]["args"]
    args["artifacts"] = str((artifacts / "ml-100k").resolve())
    args["engine"] = {"backend": engine}
    args["store"] = {"backend": "redis", "url": redis_url}
    for name in ("CFDeployment", "RetrievalDeployment", "RerankDeployment"):
        args["deployments"][name] |= {"num_replicas": 2, "max_replicas_per_node": 1}
    config = (artifacts / "cluster-demo" / "serve_config.yaml").resolve()
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    run(bin_("serve"), "deploy", str(config), f"--address={DASHBOARD}")
    deadline = time.monotonic() + 600
    while True:
        out = subprocess.run([bin_("serve"), "status", f"--address={DASHBOARD}"], capture_output=True, text=True,
                             env=os.environ | ENV)  # fmt: skip
        status = (yaml.safe_load(out.stdout) or {}).get("applications", {}).get("q2rec", {}).get("status")
        if status == "RUNNING":
            break
        if status == "DEPLOY_FAILED" or time.monotonic() > deadline:
            raise SystemExit(f"error: the app did not start ({status}):\n{out.stdout[-3000:]}")
        time.sleep(2)
    answer, _ = post("/recommend", {"user_id": "1", "k": 5})
    print(
        f"POST /recommend user 1 -> degraded {answer['degraded']}, top 5: {[it['title'] for it in answer['items']]}"
    )
    top = answer["items"][0]
    event, took = post("/users/1/events", {"item_ids": [top["item_id"]]})
    print(
        f"POST /users/1/events [{top['title']}] -> replica {took}, history length {event['history_length']}"
    )
    seen: dict[str, bool] = {}
    for _ in range(20):  # until both ingress replicas have answered
        after, replica = post("/recommend", {"user_id": "1", "k": 5})
        seen[replica] = top["item_id"] in [it["item_id"] for it in after["items"]]
        if len(seen) == 2:
            break
    for replica, still in seen.items():
        print(
            f"  replica {replica}: {'STILL recommends it' if still else 'no longer recommends it'} (shared store)"
        )


def placement() -> None:
    """Each Serve replica and the node it runs on (head or worker, by the node's custom resource)."""
    from ray.util.state import list_actors, list_nodes

    names = {}
    for n in list_nodes(address=DASHBOARD):
        names[n.node_id] = (
            "head"
            if "head" in n.resources_total
            else "worker"
            if "worker" in n.resources_total
            else n.node_id[:8]
        )
    rows = [(a.class_name, names.get(a.node_id, a.node_id[:8])) for a in list_actors(address=DASHBOARD, filters=[("state", "=", "ALIVE")], limit=1000)
            if a.class_name.startswith("ServeReplica:q2rec:")]  # fmt: skip
    print("\n| replica | node |\n|---|---|")
    for cls, node in sorted(rows):
        print(f"| {cls.removeprefix('ServeReplica:q2rec:')} | {node} |")


def down() -> None:
    """Stop Serve on the demo cluster and every Ray process on this machine (`ray stop` stops them all)."""
    if shutil.which(bin_("serve")):
        run(bin_("serve"), "shutdown", "-y", f"--address={DASHBOARD}", check=False, capture_output=True)
    run(bin_("ray"), "stop", "--force", check=False)
    if shutil.which("redis-cli"):  # a redis-server a --keep or failed run left
        run("redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave", check=False, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from runtime.ray_cluster import apply_safe_env

    apply_safe_env()  # the cluster's token (generated unless $RAY_AUTH_TOKEN is set), passed on to every node
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, default=Path(os.environ.get("Q2REC_ARTIFACTS", "artifacts")))
    ap.add_argument("--items", type=int, default=64, help="catalog items the enrichment job enriches")
    ap.add_argument("--engine", choices=["auto", "none"], default="none",
                    help="the Serve app's query writer (the enrichment job always runs the LLM)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="leave the cluster and the app running")
    ap.add_argument("--down", action="store_true", help="only stop what a cluster demo left running")
    a = ap.parse_args(argv)
    if a.down:
        down()
        return 0
    if not (a.artifacts / "ml-100k" / "fusion.json").is_file():
        print(f"error: {a.artifacts / 'ml-100k'} has no fusion.json; run `make demo` first", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    sys.path.insert(0, str(ROOT))
    from devtools.redis_server import RedisServer

    redis_dir = a.artifacts / "cluster-demo" / "redis"
    shutil.rmtree(redis_dir, ignore_errors=True)  # each demo starts with no events
    redis = RedisServer(redis_dir, REDIS_PORT)
    try:
        start_cluster()
        redis.start()
        print(f"online store: redis-server at {redis.url}")
        enrich_job(a.artifacts, a.items, a.engine)
        deploy(a.artifacts, a.engine, redis.url)
        placement()
        print(f"\ncluster demo done in {time.monotonic() - t0:.0f}s; dashboard {DASHBOARD}")
    finally:
        if not a.keep:
            down()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
