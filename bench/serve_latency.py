"""HTTP latency and throughput of the Serve app against a no-op composition of the same shape.

    python bench/serve_latency.py [--artifacts artifacts/ml-100k] [--requests 300] [--rows auto|full|stats|topn]  # after make demo

Everything runs on 127.0.0.1 in one Ray cluster, measured in the same run:
- cached path: known users, whose LLM query was written by the batch job (the common case);
- generate path: a new history per request, the request waiting for its LLM query (vLLM on CPU here);
- the no-op composition (``bench/noop_app.py``): the same four deployments returning constants;
- each branch alone, both branches in parallel (``asyncio.gather``) and one after the other, via handles.
Load is bounded: each client sends one request at a time, over one keep-alive connection. The no-op and
cached loads alternate in slices (``--rounds``), so a noisy box weighs on both alike.
Goals (cached path): p50 <= 1.3x no-op p50; throughput >= 0.8x no-op; parallel <= slower branch + 5 ms.

    python bench/serve_latency.py --stores [--artifacts ...]

measures instead what the shared online store (``serve.store``) costs a request: the same app (engine
``none``) three times, its ingress reading histories from memory (per replica, not shared), from the
embedded SQLite file and from a real redis-server started here, the loads alternating; the ratio is
against the in-memory store, and ``timings_ms.store`` is the history read inside the ingress.

    python bench/serve_latency.py --catalogs artifacts/ml-100k,/tmp/q2rec-scale/synthetic-100000x1000000-s0

measures what the catalog's size costs a request: each artifacts directory (a trained CF model and a
``fusion.json``; the branches' test-stage cache for the equality check) deployed as its own app beside the
no-op composition, engine ``none``, the loads alternating over known users of each; the ratio is against
the first catalog. It also gives each replica's peak RSS (sampled during the load) and checks, for a
sample of test users per catalog, that the served top-10 equals the offline fusion of the same config.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def run_clients(client, clients: int) -> float:
    """``client(c)`` on ``clients`` threads at once; the wall time until the last one returns."""
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_load(port: int, path: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """Send ``bodies`` with ``clients`` concurrent clients; latency percentiles (ms) and throughput."""
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(enumerate(bodies))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                _, body = queue.pop()
            t0 = time.perf_counter()
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if resp.status != 200:
                    errors.append(f"{resp.status} {payload[:200]!r}")
                    continue
                latencies.append(ms)
                timings.append(json.loads(payload).get("timings_ms", {}))
        conn.close()

    wall = run_clients(lambda _: client(), clients)
    if not latencies:
        raise RuntimeError(f"{path}: every request failed, e.g. {errors[:3]}")
    return summarise(latencies, timings, len(errors), wall)


def summarise(
    latencies: list[float], timings: list[dict[str, float]], errors: int, wall: float
) -> dict[str, Any]:
    return {"n": len(latencies), "errors": errors, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "rps": len(latencies) / wall, "timings": timings,
            "latencies": latencies, "wall": wall}  # fmt: skip


def interleaved(port: int | dict[str, int], paths: dict[str, str],
                bodies: list[dict[str, Any]] | dict[str, list[dict[str, Any]]],
                clients: int, rounds: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each path's load in ``rounds`` alternating slices of ``bodies`` (one list for every path, or one per
    path name), so drift of a shared, noisy box falls on every path alike; per path, the slices' figures
    pooled. ``port``: one server for every path, or one per path name (apps on their own ports)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    per_path = bodies if isinstance(bodies, dict) else dict.fromkeys(paths, bodies)
    ports = port if isinstance(port, dict) else dict.fromkeys(paths, port)
    for r in range(rounds):
        for name, path in paths.items() if r % 2 == 0 else reversed(paths.items()):
            size = -(-len(per_path[name]) // rounds)
            runs[name].append(run_load(ports[name], path, per_path[name][r * size : (r + 1) * size], clients))
    return {
        name: summarise(
            [x for r in rs for x in r["latencies"]],
            [t for r in rs for t in r["timings"]],
            sum(r["errors"] for r in rs),
            sum(r["wall"] for r in rs),
        )
        for name, rs in runs.items()
    }


def handle_p50(call, n: int) -> float:
    """Median ms of ``n`` calls of ``call()`` (one at a time)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def compare_stores(root: Path, port: int, requests: int, rounds: int, workdir: Path) -> None:
    from ray import serve

    from runtime.ray_cluster import init_ray
    from serve.app import build_app

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ is not an installed package
    from devtools.redis_server import RedisServer

    redis = RedisServer(workdir / "redis").start()
    stores = {
        "memory": {"backend": "memory"},
        "sqlite": {"backend": "sqlite", "path": str(workdir / "state.sqlite3")},
        "redis": {"backend": "redis", "url": redis.url},
    }
    try:
        base = {"artifacts": str(root), "engine": {"backend": "none"}, "auth": "none"}
        init_ray(quiet=True)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for name, store in stores.items():
            serve.run(build_app(base | {"store": store}), name=f"store-{name}", route_prefix=f"/{name}")
        rng = random.Random(0)
        users = [str(u) for u in range(1, 944)]
        bodies = [{"user_id": rng.choice(users), "k": 10} for _ in range(requests)]
        paths = {name: f"/{name}/recommend" for name in stores}
        for path in paths.values():
            run_load(port, path, bodies[:30], 2)
        print("| store | clients | requests | errors | p50 ms | p99 ms | req/s | p50 / memory | "
              "store read p50 ms (in the ingress) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
        for clients in (1, 8):
            res = interleaved(port, paths, bodies, clients, rounds)
            mem = res["memory"]
            for name, r in res.items():
                read = statistics.median(t["store"] for t in r["timings"])
                print(f"| {name} | {clients} | {r['n']} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                      f"{r['rps']:.1f} | {r['p50'] / mem['p50']:.2f} | {read:.2f} |")  # fmt: skip
    finally:
        serve.shutdown()
        redis.stop()


def replica_pids(apps: list[str]) -> dict[tuple[str, str], list[int]]:
    """(app, deployment) -> pids of its RUNNING replicas, from one reading of Serve's state."""
    # replica ids, actor names and pids have no public API: serve.status() stops at deployments, and
    # ray.util.state needs the dashboard, which the tests and benches run without
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ReplicaState, ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    return {
        (app, name): [r.pid for r in d.replicas if r.state == ReplicaState.RUNNING and r.pid]
        for app in apps
        for name, d in details.applications[app].deployments.items()
    }


class RSSSampler:
    """Peak RSS of each replica process, sampled every 0.5 s in a thread while the loads run."""

    def __init__(self, pids: dict[tuple[str, str], list[int]]) -> None:
        self.pids, self.peak = pids, dict.fromkeys(pids, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        import psutil

        for key, pids in self.pids.items():
            for pid in pids:
                with contextlib.suppress(psutil.Error):  # a replica that ended meanwhile
                    self.peak[key] = max(self.peak[key], psutil.Process(pid).memory_info().rss)

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def __enter__(self) -> RSSSampler:
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.sample()


def offline_fused(root: Path, users: list[str], k: int = 10) -> dict[str, list[str]]:
    """The offline test-stage fusion of ``fusion.json``'s config for ``users``: item ids, best first, from the
    branches ``tune.branches_store.compute`` gives those users (the trained model as saved)."""
    from actors.cf import model_class
    from actors.rerank import fuse
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus
    from serve.config import ServeAppConfig
    from serve.state import load_fusion
    from tune.branches_store import compute

    paths = ArtifactPaths(root)
    setup = load_fusion(ServeAppConfig(artifacts=str(root)))
    cf = setup.cf or "sasrec"
    corpus = Corpus.load(paths)
    row_of = {str(corpus.user_ids[u]): r for r, u in enumerate(corpus.eval_users("test"))}
    model = model_class(cf).load(paths.model_dir(cf))
    b = compute(paths, corpus, "test", model, setup.weights, users=[row_of[u] for u in users])
    fused = fuse(b.cf, b.retrieval, b.history_len, setup.config, k, b.unseen)
    return {u: corpus.item_ids[fused.ids[i]].tolist() for i, u in enumerate(users)}


def compare_catalogs(roots: list[Path], port: int, requests: int, rounds: int, check_users: int) -> int:
    """The same app on each catalog, against the no-op composition and the first catalog (see the module
    docstring); returns 1 when a served answer differs from the offline fusion."""
    from noop_app import build_noop_app
    from ray import serve

    from actors.fusion_file import FusionFile
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus
    from runtime.ray_cluster import init_ray
    from serve.app import build_app

    rng = random.Random(0)
    init_ray(quiet=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_noop_app(), name="noop", route_prefix="/noop")
    apps, paths, users, sizes = {}, {"no-op composition": "/noop/recommend"}, {}, {}
    for i, root in enumerate(roots):
        corpus = Corpus.load(ArtifactPaths(root))
        sizes[i] = (len(corpus.user_ids), corpus.n_items)
        users[i] = [str(corpus.user_ids[u]) for u in corpus.eval_users("test")]
        label = f"{root.name} ({sizes[i][1]:,} items)"
        cfg = {"artifacts": str(root), "engine": {"backend": "none"}, "store": {"backend": "memory"}, "auth": "none",
               "cf_model": FusionFile.load(ArtifactPaths(root).fusion).cf or "sasrec"}  # fmt: skip
        t0 = time.perf_counter()
        serve.run(build_app(cfg), name=f"catalog{i}", route_prefix=f"/catalog{i}")
        print(f"{label}: deployed in {time.perf_counter() - t0:.0f} s", flush=True)
        apps[i], paths[label] = f"catalog{i}", f"/catalog{i}/recommend"
    bodies = {label: [{"user_id": rng.choice(users[i]), "k": 10} for _ in range(requests)]
              for i, label in zip(apps, list(paths)[1:], strict=True)}  # fmt: skip
    bodies["no-op composition"] = bodies[list(paths)[1]]
    for name, path in paths.items():  # warm every path
        run_load(port, path, bodies[name][:20], 2)
    pids = replica_pids(["noop", *apps.values()])
    results = {}
    with RSSSampler(pids) as rss:
        for clients in (1, 8):
            for name, r in interleaved(port, paths, bodies, clients, rounds).items():
                results[(name, clients)] = r
    first = next(iter(paths))  # the no-op composition
    base = list(paths)[1]
    print("\n| app | clients | requests | errors | p50 ms | p99 ms | req/s | p50 / no-op | p50 / "
          f"{base.split(' ')[0]} | branches p50 ms (in the ingress) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for clients in (1, 8):
        for name in paths:
            r = results[(name, clients)]
            br = statistics.median(t.get("branches", 0.0) for t in r["timings"]) if r["timings"] else 0.0
            print(f"| {name} | {clients} | {r['n']} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                  f"{r['rps']:.1f} | {r['p50'] / results[(first, clients)]['p50']:.2f} | "
                  f"{r['p50'] / results[(base, clients)]['p50']:.2f} | {br:.2f} |")  # fmt: skip
    print("\n| app | deployment | replicas | peak RSS GiB (per replica) |\n|---|---|---:|---:|")
    for (app, dep), peak in rss.peak.items():
        print(f"| {app} | {dep} | {len(pids[(app, dep)])} | {peak / 2**30:.2f} |")
    failed = 0
    print("\n| app | users checked | served top-10 == offline fusion |\n|---|---:|---:|")
    for i, root in enumerate(roots):
        sample = rng.sample(users[i], min(check_users, len(users[i])))
        want = offline_fused(root, sample)
        same = 0
        for u in sample:
            status, out = post(port, f"/catalog{i}/recommend", {"user_id": u, "k": 10})
            got = [it["item_id"] for it in out["items"]] if status == 200 else None
            same += got == want[u]
            if got != want[u]:
                print(f"  {root.name} user {u}: served {got}, offline {want[u]}")
        failed += same < len(sample)
        print(f"| {root.name} | {len(sample)} | {same} |")
    big, small = list(paths)[-1], base
    ratio = results[(big, 1)]["p50"] / results[(small, 1)]["p50"]
    print(f"\nsummary: 1-client p50 {results[(small, 1)]['p50']:.1f} ms at {sizes[0][1]:,} items, "
          f"{results[(big, 1)]['p50']:.1f} ms at {sizes[len(roots) - 1][1]:,} items ({ratio:.2f}x; goal <= 2x)")  # fmt: skip
    serve.shutdown()
    return 1 if failed else 0


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    return resp.status, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts/ml-100k")
    ap.add_argument("--requests", type=int, default=600, help="cached-path requests per measurement")
    ap.add_argument("--generate", type=int, default=16, help="generate-path requests per measurement")
    ap.add_argument("--rounds", type=int, default=6, help="alternating slices of the no-op and cached loads")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--engine", default="auto", help="query writer backend (auto: vLLM when it imports)")
    ap.add_argument("--rows", default="auto", choices=["auto", "full", "stats", "topn"],
                    help="what branches send beside their top-N: catalog-wide score rows, their statistics, "
                    "or nothing (auto: by catalog size; fused scores equal the offline evaluation's with full)")  # fmt: skip
    ap.add_argument("--stores", action="store_true",
                    help="measure only the online store's cost: in-memory vs SQLite vs Redis")  # fmt: skip
    ap.add_argument("--catalogs", help="artifacts directories, comma-separated: the same app on each catalog, "
                    "against the first (latency, replica RSS, served == offline fusion)")  # fmt: skip
    ap.add_argument("--check-users", type=int, default=50, help="--catalogs: users checked against offline")
    args = ap.parse_args(argv)
    from data_prep.artifacts import ArtifactPaths

    if args.catalogs:
        roots = [Path(r) for r in args.catalogs.split(",") if r]
        for r in roots:
            p = ArtifactPaths(r)
            if not p.fusion.is_file():
                print(f"error: {p.fusion} not found; run `q2rec search` on {r}", file=sys.stderr)
                return 2
        return compare_catalogs(roots, args.port, args.requests, args.rounds, args.check_users)
    root = Path(args.artifacts)
    if args.stores:
        import tempfile

        if not ArtifactPaths(root).is_prepared():
            print(f"error: {root} is not prepared; run `make demo` first", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="q2rec-stores-") as tmp:
            compare_stores(root, args.port, args.requests, args.rounds, Path(tmp))
        return 0
    paths = ArtifactPaths(root)
    needed = [paths.fusion, paths.user_queries, paths.model_dir("sasrec") / "config.json"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"error: missing {missing}; run `make demo` first", file=sys.stderr)
        return 2

    from noop_app import build_noop_app  # bench/ is on the path of this script and of its Ray workers
    from ray import serve

    from serve.run import start_app

    base = {"artifacts": str(root), "branch_rows": args.rows}
    # the generate path waits for its query (up to 60 s) so its latency includes writing it
    start_app(base | {"engine": {"backend": args.engine}, "timeouts": {"llm": 60.0}}, port=args.port)
    serve.run(build_noop_app(), name="noop", route_prefix="/noop")
    rng = random.Random(0)
    users = [str(u) for u in range(1, 944)]
    cached = [{"user_id": rng.choice(users), "k": 10} for _ in range(args.requests)]
    n_items = 1682
    fresh = [
        {"history": [str(rng.randint(1, n_items)) for _ in range(4)], "k": 10}
        for _ in range(2 * args.generate)
    ]
    warm = [{"user_id": u, "k": 10} for u in users[:30]]
    for path in ("/recommend", "/noop/recommend"):
        run_load(args.port, path, warm, 2)

    rows, results = [], {}
    compared = {"no-op composition": "/noop/recommend", "cached path": "/recommend"}
    for clients in (1, 8):
        for name, r in interleaved(args.port, compared, cached, clients, args.rounds).items():
            results[(name, clients)] = r
            rows.append((name, clients, r))
    gen = {}
    for i, clients in enumerate((1, 8)):
        part = fresh[i * args.generate : (i + 1) * args.generate]
        gen[clients] = run_load(args.port, "/recommend", part, clients)
        rows.append(("generate path (LLM query)", clients, gen[clients]))

    print(
        "| path | clients | requests | errors | p50 ms | p99 ms | req/s |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for name, clients, r in rows:
        print(
            f"| {name} | {clients} | {r['n']} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} |"
        )

    # branch latencies: each branch alone through its handle, and the ingress's own fan-out timings
    from serve.config import ServeAppConfig
    from serve.deployments import CFRequest, RetrievalRequest
    from serve.state import ServingState

    state = ServingState(ServeAppConfig(artifacts=str(root)))
    hist = state.histories["1"]
    texts = state.queries.get(state.key("1", hist))[0]
    cf_req = CFRequest(hist, sorted(set(hist)), 200)
    ret_req = RetrievalRequest(hist, list(texts), None, sorted(set(hist)), 200)
    cf_h = serve.get_deployment_handle("CFDeployment", app_name="q2rec")
    ret_h = serve.get_deployment_handle("RetrievalDeployment", app_name="q2rec")
    cf_alone = handle_p50(lambda: cf_h.score.remote(cf_req).result(), 100)
    ret_alone = handle_p50(lambda: ret_h.score.remote(ret_req).result(), 100)

    def both():  # both sent before either is awaited: the ingress's fan-out without HTTP
        pending = (cf_h.score.remote(cf_req), ret_h.score.remote(ret_req))
        return [r.result() for r in pending]

    noop_cf = serve.get_deployment_handle("NoopCF", app_name="noop")
    noop_ret = serve.get_deployment_handle("NoopRetrieval", app_name="noop")
    noop_alone = handle_p50(lambda: noop_cf.score.remote({}).result(), 100)
    noop_par = handle_p50(
        lambda: [r.result() for r in (noop_cf.score.remote({}), noop_ret.score.remote({}))], 100
    )
    par = handle_p50(both, 100)
    ser = handle_p50(lambda: (cf_h.score.remote(cf_req).result(), ret_h.score.remote(ret_req).result()), 100)

    def ingress_p50(key: str) -> float:
        return statistics.median(t[key] for t in results[("cached path", 1)]["timings"])

    ingress = ingress_p50("branches")
    print("\n| branch phase (1 client, p50 ms) | ms |\n|---|---:|")
    for name, v in (("no-op branch alone (handle round trip)", noop_alone),
                    ("no-op branches in parallel (handles)", noop_par),
                    ("CF alone (handle)", cf_alone), ("retrieval alone (handle)", ret_alone),
                    ("parallel (both sent, then awaited; handles)", par), ("serial (one after the other, handles)", ser),
                    ("parallel inside the ingress (timings_ms.branches)", ingress),
                    ("fusion inside the ingress (timings_ms.fuse)", ingress_p50("fuse")),
                    ("whole request inside the ingress (timings_ms.total)", ingress_p50("total"))):  # fmt: skip
        print(f"| {name} | {v:.2f} |")

    c1, n1 = results[("cached path", 1)], results[("no-op composition", 1)]
    c8, n8 = results[("cached path", 8)], results[("no-op composition", 8)]
    slower = max(cf_alone, ret_alone)
    checks = [
        ("p50 cached / no-op (1 client)", c1["p50"] / n1["p50"], "<= 1.3", c1["p50"] / n1["p50"] <= 1.3),
        ("p50 cached / no-op (8 clients)", c8["p50"] / n8["p50"], "<= 1.3", c8["p50"] / n8["p50"] <= 1.3),
        (
            "throughput cached / no-op (8 clients)",
            c8["rps"] / n8["rps"],
            ">= 0.8",
            c8["rps"] / n8["rps"] >= 0.8,
        ),
        ("parallel - slower branch (ms)", par - slower, "<= 5", par - slower <= 5),
    ]
    print("\n| check | value | goal | met |\n|---|---:|---|---|")
    for name, value, goal, ok in checks:
        print(f"| {name} | {value:.2f} | {goal} | {'yes' if ok else 'NO'} |")
    print(f"\nsummary ({args.rows} rows): cached p50 {c1['p50']:.1f} ms = {c1['p50'] / n1['p50']:.2f}x no-op; 8-client "
          f"throughput {c8['rps']:.1f} req/s = {c8['rps'] / n8['rps']:.2f}x no-op; parallel branches {par:.1f} ms vs serial "
          f"{ser:.1f} ms (slower branch alone {slower:.1f} ms); generate p50 {gen[1]['p50']:.0f} ms (1 client), "
          f"{gen[8]['p50']:.0f} ms (8 clients)")  # fmt: skip
    serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
