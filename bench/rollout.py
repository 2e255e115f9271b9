"""A new build rolled out under load: failed requests, answers fusing two builds, switch time, p99.

    python bench/rollout.py [--artifacts artifacts/ml-100k] [--clients 4] [--seconds 90]   # after make demo

The app (engine ``none``, SQLite store, ``--replicas`` of each deployment but the LLM's) serves build A: the artifacts with
their ``fusion.json``. Under a steady load of known users (each client one request at a time), build B
replaces it: with ``--mode inplace``, by ``serve.run`` of the changed app under the same name (what
``serve deploy`` of a changed config does); with ``--mode rollout`` (the default), by ``serve.rollout``.
Build B is the same artifacts and another ``fusion.json`` (a fixed α of 0.5), so every deployment's
config changes and Serve replaces every replica. Every answer names its build (``version``) and the
branches refuse requests of another build, so an answer is never fused from two builds; the bench checks
it from outside too: each answer's top-10 must equal what a static app of its build answers for that user
(known before the rollout for A, after it for B). It prints requests, failures, degraded answers, answers
per build, answers equal to neither build's, the switch (from the redeploy call to the first B answer,
and to the last A answer), and p50/p99 before, during and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import percentile  # noqa: E402

USERS = [str(u) for u in range(1, 201)]


def ask(conn: http.client.HTTPConnection, user: str) -> tuple[int, dict]:
    conn.request(
        "POST", "/recommend", json.dumps({"user_id": user, "k": 10}), {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"null")


def static_answers(port: int) -> tuple[str, dict[str, list[str]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out, version = {}, ""
    for u in USERS:
        status, body = ask(conn, u)
        if status != 200 or body["degraded"]:
            raise RuntimeError(f"user {u}: {status} {body}")
        out[u], version = [i["item_id"] for i in body["items"]], body["version"]
    return version, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/ml-100k"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0, help="load after the redeploy call")
    ap.add_argument("--port", type=int, default=8138)
    ap.add_argument("--replicas", type=int, default=1, help="replicas of every deployment but the LLM's")
    ap.add_argument("--mode", choices=["inplace", "rollout"], default="rollout",
                    help="inplace: serve.run of the changed app (what serve deploy does); rollout: serve.rollout")  # fmt: skip
    args = ap.parse_args(argv)

    from ray import serve

    from actors.fusion_file import FusionFile
    from runtime.ray_cluster import init_ray
    from serve.app import build_app
    from serve.rollout import rollout

    def deploy(build: dict) -> None:
        if args.mode == "rollout":
            print(rollout(build, "rollout"), flush=True)
        else:
            serve.run(build_app(build), name="rollout", route_prefix="/")

    work = Path(tempfile.mkdtemp(prefix="q2rec-rollout-"))
    fusion_b = work / "fusion-b.json"
    saved = FusionFile.load(args.artifacts / "fusion.json")
    saved.model_copy(update={"config": replace(saved.config, method="fixed", alpha=0.5)}).save(fusion_b)
    base = {"artifacts": str(args.artifacts.resolve()), "engine": {"backend": "none"}, "auth": "none",
            "store": {"backend": "sqlite", "path": str(work / "state.sqlite3")},
            "deployments": {d: {"num_replicas": args.replicas}
                            for d in ("RerankDeployment", "CFDeployment", "RetrievalDeployment")}}  # fmt: skip
    build_a, build_b = base, base | {"fusion_path": str(fusion_b)}
    init_ray(quiet=True)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    try:
        deploy(build_b)
        version_b, expect_b = static_answers(args.port)
        deploy(build_a)  # A serves when the load starts
        version_a, expect_a = static_answers(args.port)
        expected = {version_a: expect_a, version_b: expect_b}
        print(f"build A {version_a}, build B {version_b}; {len(USERS)} users' static answers recorded")

        log: list[
            tuple[float, int, str, bool, bool, float]
        ] = []  # (end, status, version, degraded, equal, ms)
        lock, stop = threading.Lock(), threading.Event()
        errors: list[str] = []

        def client(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
            while not stop.is_set():
                user = rng.choice(USERS)
                t0 = time.perf_counter()
                try:
                    status, body = ask(conn, user)
                except OSError:
                    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
                    status, body = 0, {}
                end = time.perf_counter()
                if status != 200:
                    with lock:
                        errors.append(f"{status} {str(body)[:100]}")
                v = body.get("version", "") if status == 200 else ""
                equal = status == 200 and [i["item_id"] for i in body["items"]] == expected.get(v, {}).get(
                    user
                )
                with lock:
                    log.append((end, status, v, bool(body.get("degraded")), equal, (end - t0) * 1000))

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(10)
        t_deploy = time.perf_counter()
        deploy(build_b)
        t_done = time.perf_counter()
        time.sleep(max(0.0, args.seconds - (t_done - t_deploy)))
        stop.set()
        for t in threads:
            t.join()
    finally:
        serve.shutdown()

    first_b = min((e for e, s, v, *_ in log if v == version_b), default=float("nan"))
    last_a = max((e for e, s, v, *_ in log if v == version_a), default=float("nan"))
    phases = {"before": [r for r in log if r[0] < t_deploy],
              "during": [r for r in log if t_deploy <= r[0] <= max(last_a, t_done)],
              "after": [r for r in log if r[0] > max(last_a, t_done)]}  # fmt: skip
    print("\n| phase | requests | failed | degraded | build A | build B | equal to neither build's answer "
          "| p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name, rows in phases.items():
        ok = [r for r in rows if r[1] == 200]
        ms = [r[5] for r in ok]
        print(f"| {name} | {len(rows)} | {len(rows) - len(ok)} | {sum(r[3] for r in ok)} | "
              f"{sum(r[2] == version_a for r in ok)} | {sum(r[2] == version_b for r in ok)} | "
              f"{sum(not r[4] and not r[3] for r in ok)} | {percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} |")  # fmt: skip
    print(f"\nfailed requests (status 0: the connection broke): {dict(Counter(errors))}")
    print(
        f"redeploy call returned after {t_done - t_deploy:.1f} s; first build-B answer "
        f"{first_b - t_deploy:.1f} s and last build-A answer {last_a - t_deploy:.1f} s after the call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
