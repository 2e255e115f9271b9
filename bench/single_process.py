"""The Serve app against a single-process server of the same models, fusion and request/response (no Ray).

    python bench/single_process.py [--artifacts artifacts/ml-100k] [--requests 300] [--throughput-requests 600]
                                   [--rounds 6] [--check-users 50] [--threads 1]     # after make demo
    python bench/single_process.py --single-only [...]   # no Ray: the single-process app alone
    python bench/single_process.py serve --config-json '{...}' --port P   # the server alone (what the bench starts)

The single-process app is bench-only. It is no second implementation: it instantiates the classes under the
Serve deployments (``Deployment.func_or_class``: ``QueryDeployment``, ``RetrievalDeployment``,
``CFDeployment``, their ``@serve.batch`` batching included) in one process and hands ``serve.recommender``'s
``Recommender`` in-process handles to them (``LocalHandle``: ``.method.remote(...)`` gives an awaitable task,
the shape ``serve.fan_out`` awaits and cancels). One FastAPI app on uvicorn serves ``POST /recommend`` with
``serve.schemas``'s request and response, ``serve.api``'s error mapping and validation handler and
``serve.middleware``'s body limit and replica header. It runs in a subprocess of its own, so neither the
clients' threads nor Ray's driver share its interpreter.

Both apps get the shipped one-machine profile (``serve/serve_config.yaml``'s args: SASRec, the timeouts, one
replica per deployment), engine ``none`` (the cached path: known users; ML-100K's ``fusion.json`` gives the
LLM query weight 0, so no LLM is in the loop) and a fresh SQLite store each; only the Serve ingress's
admission differs (``--ingress``, default 8 ongoing and no queue limit: the shipped 4 + 4 sheds most of an
8-client load with 503s, and the single process sheds nothing). Before timing, the top-10 of both apps must
be equal for ``--check-users`` known users (test users), or the bench fails. Then, on 127.0.0.1, p50/p99 at
1 client and requests/s at 8 clients, each client one request at a time over one keep-alive connection, the
two apps' loads alternating in ``--rounds`` slices so a noisy box weighs on both alike
(``bench/serve_latency.py``'s clients). Memory: the single-process server's RSS against the sum over Ray's
processes (every process this run's local Ray cluster started: replicas, proxy, controller, raylet, GCS,
...), RSS and PSS (PSS counts a page shared by several processes once in all).

``--single-only`` starts no Ray: the single-process app's top-10 are checked against the offline test-stage
fusion of ``fusion.json``'s config (``bench/serve_latency.py``'s ``offline_fused``), then it is timed alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # serve_latency (its clients and percentiles)
sys.path.insert(0, str(BENCH.parent))  # the repository, when run as a script

from devtools.redis_server import free_port  # noqa: E402

# module-level: FastAPI resolves the route's (postponed) annotations in this module's globals
from serve.schemas import RecommendRequest, RecommendResponse  # noqa: E402


# ---- the single-process app -------------------------------------------------------------------------------
class LocalMethod:
    """``handle.method.remote(...)`` in process: the call as an asyncio task (awaitable, ``cancel()``-able,
    as a Serve ``DeploymentResponse`` is to ``serve.fan_out``)."""

    def __init__(self, method) -> None:
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future:
        out = self.method(*args, **kwargs)
        if inspect.isawaitable(out):
            return asyncio.ensure_future(out)
        done = asyncio.get_running_loop().create_future()
        done.set_result(out)
        return done


class LocalHandle:
    """A deployment handle over a plain object of this process: ``handle.score.remote(request)``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> LocalMethod:
        return LocalMethod(getattr(self.target, name))


def _no_replica_context_warning() -> None:
    """``@serve.batch``'s queue reads the replica context at its creation only to warn when
    max_batch_size exceeds the replica's max_ongoing_requests; outside Serve there is no replica context,
    so that warning (and nothing else of the batching) is turned off in this process."""
    from ray.serve import batching

    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = lambda self: None


async def build_recommender(config: dict[str, Any]):
    """``serve.app.build_app``'s composition in this process: the three branch classes (the plain classes
    of the Serve deployments), one instance each, and the ingress's ``Recommender`` over in-process handles,
    started and warmed as ``RerankDeployment``'s constructor does."""
    from serve.config import ServeAppConfig
    from serve.deployments import CFDeployment, QueryDeployment, RetrievalDeployment
    from serve.recommender import Recommender

    _no_replica_context_warning()
    cfg = ServeAppConfig(**config)
    cfg.check_auth()
    plain = cfg.model_dump()
    query = QueryDeployment.func_or_class(plain)
    cls = RetrievalDeployment.func_or_class
    retrieval = cls.__new__(cls)
    await cls.__init__(retrieval, plain)  # an async constructor, as Serve awaits it
    cf = CFDeployment.func_or_class(plain)
    rec = Recommender(cfg, LocalHandle(query), LocalHandle(retrieval), LocalHandle(cf))
    await rec.start()
    if cfg.timeouts.warmup > 0:
        silent = await rec.warm(cfg.timeouts.warmup)
        if silent:
            print(f"single process: {silent} did not answer within {cfg.timeouts.warmup}s", file=sys.stderr)
    return rec


def build_single_app(config: dict[str, Any]):
    """The FastAPI app: ``POST /recommend`` (``serve.api``'s route: same schemas, errors, middleware) and a
    ``GET /healthz`` that answers once the models are loaded and warm."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from serve.api import _as_http, _invalid_request
    from serve.config import ServeAppConfig
    from serve.middleware import BodyLimit, ReplicaHeader, configure

    cfg = ServeAppConfig(**config)
    configure(cfg.max_body_bytes, "single-process", cfg.api_docs)
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app):
        holder["rec"] = await build_recommender(config)
        yield

    app = FastAPI(
        title="q2rec (single process, bench only)", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_middleware(BodyLimit)
    app.add_middleware(ReplicaHeader)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.post("/recommend", response_model=RecommendResponse, responses={404: {}, 422: {}, 503: {}})
    async def recommend(body: RecommendRequest) -> dict[str, Any]:
        with _as_http():
            return await holder["rec"].recommend(body)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        rec = holder["rec"]
        return {"status": "ok", "users": len(rec.state.histories), "items": rec.state.n_items,
                "version": rec.version, "counts": dict(rec.counts)}  # fmt: skip

    return app


def serve_single(config: dict[str, Any], port: int) -> None:
    import uvicorn

    uvicorn.run(build_single_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- the bench ------------------------------------------------------------------------------------------
def app_config(root: Path, store: Path) -> dict[str, Any]:
    """The shipped one-machine profile's args on ``root``: the CF model ``fusion.json`` was tuned with,
    engine ``none``, a SQLite store at ``store``."""
    from actors.fusion_file import FusionFile
    from data_prep.artifacts import ArtifactPaths
    from serve.run import DEFAULT_CONFIG, read_config

    args, _ = read_config(DEFAULT_CONFIG)
    cf = FusionFile.load(ArtifactPaths(root).fusion).cf or args.get("cf_model", "sasrec")
    return args | {"artifacts": str(root), "cf_model": cf, "engine": {"backend": "none"}, "auth": "none",
                   "store": {"backend": "sqlite", "path": str(store)}}  # fmt: skip


class SingleProcessServer:
    """``python bench/single_process.py serve ...`` as a subprocess, until ``/healthz`` answers."""

    def __init__(self, config: dict[str, Any], port: int, threads: int, timeout: float = 600.0) -> None:
        self.port = port
        env = os.environ | {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", "--config-json", json.dumps(config),
               "--port", str(port)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, cwd=str(BENCH.parent))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the single-process server exited with {self.proc.returncode}")
            url = f"http://127.0.0.1:{port}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the single-process server did not answer within {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def known_users(root: Path) -> list[str]:
    """The test-stage users (known users: their history is in the trained data)."""
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus

    corpus = Corpus.load(ArtifactPaths(root))
    return [str(corpus.user_ids[u]) for u in corpus.eval_users("test")]


def top10(port: int, user: str) -> tuple[list[str] | None, dict[str, Any]]:
    from serve_latency import post

    status, out = post(port, "/recommend", {"user_id": user, "k": 10})
    if status != 200 or out.get("degraded"):
        return None, out
    return [it["item_id"] for it in out["items"]], out


def check_equal(ports: dict[str, int], users: list[str]) -> int:
    """Users whose top-10 (ids, in order) differ between the apps of ``ports`` (the first is the reference);
    each difference is printed."""
    (ref_name, ref_port), *others = ports.items()
    differ, max_dscore = 0, 0.0
    for u in users:
        want, ref_out = top10(ref_port, u)
        for name, port in others:
            got, out = top10(port, u)
            if want is None or got != want:
                differ += 1
                print(f"  user {u}: {ref_name} {want or ref_out}, {name} {got or out}")
            else:
                d = max(
                    abs(a["score"] - b["score"]) for a, b in zip(ref_out["items"], out["items"], strict=True)
                )
                max_dscore = max(max_dscore, d)
    print(
        f"top-10 equal for {len(users) - differ} of {len(users)} users (largest score difference {max_dscore:.2e})"
    )
    return differ


def memory(pids: list[int]) -> tuple[int, int, int]:
    """(processes, RSS sum, PSS sum) of ``pids`` (bytes; PSS 0 where it cannot be read)."""
    import psutil

    n = rss = pss = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            rss += p.memory_info().rss
            with contextlib.suppress(psutil.Error, AttributeError):
                pss += p.memory_full_info().pss
            n += 1
    return n, rss, pss


def ray_pids(exclude: int) -> list[int]:
    """Every process under this driver except ``exclude``'s tree: the local Ray cluster's (GCS, raylet, the
    Serve controller, proxy and replicas, idle workers); a cluster this run joined (``$RAY_ADDRESS``) is
    not counted."""
    import psutil

    me = psutil.Process()
    skip = {exclude} | {c.pid for c in psutil.Process(exclude).children(recursive=True)}
    return [c.pid for c in me.children(recursive=True) if c.pid not in skip]


def report(
    results: dict[tuple[str, int], dict[str, Any]], names: list[str], mem: dict[str, tuple], clients: int = 8
) -> None:
    def ingress(r: dict[str, Any], key: str) -> float:
        vals = [t[key] for t in r["timings"] if key in t]
        return statistics.median(vals) if vals else float("nan")

    c = f"{clients} clients"
    print(f"\n| app | p50 ms (1 client) | p99 ms (1 client) | req/s ({c}) | p50 ms ({c}) | p99 ms ({c}) | errors |"
          " in-app p50 ms (timings_ms.total, 1 client) | processes | RSS GiB | PSS GiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        a, b = results[(name, 1)], results[(name, clients)]
        n, rss, pss = mem.get(name, (0, 0, 0))
        print(f"| {name} | {a['p50']:.1f} | {a['p99']:.1f} | {b['rps']:.1f} | {b['p50']:.1f} | {b['p99']:.1f} | "
              f"{a['errors'] + b['errors']} | {ingress(a, 'total'):.1f} | {n} | {rss / 2**30:.2f} | {pss / 2**30:.2f} |")  # fmt: skip
    if len(names) == 2:
        base, other = names
        a1, b1 = results[(base, 1)], results[(other, 1)]
        a8, b8 = results[(base, clients)], results[(other, clients)]
        (_, rss_a, pss_a), (_, rss_b, pss_b) = mem[base], mem[other]
        print(f"| {other} / {base} | {b1['p50'] / a1['p50']:.2f}x | {b1['p99'] / a1['p99']:.2f}x | "
              f"{b8['rps'] / a8['rps']:.2f}x | {b8['p50'] / a8['p50']:.2f}x | {b8['p99'] / a8['p99']:.2f}x | | "
              f"{ingress(b1, 'total') / ingress(a1, 'total'):.2f}x | | {rss_b / rss_a:.2f}x | "
              f"{(pss_b / pss_a) if pss_a else float('nan'):.2f}x |")  # fmt: skip
    stages = ("catalog", "store", "cf", "retrieval", "branches", "fuse", "total")
    print(f"\n| in-app p50 ms (timings_ms, 1 client) | {' | '.join(stages)} |\n|---|{'---:|' * len(stages)}")
    for name in names:
        print(f"| {name} | {' | '.join(f'{ingress(results[(name, 1)], k):.2f}' for k in stages)} |")
    if len(names) == 2:
        print(f"\nsummary: {other} p50 {b1['p50']:.1f} ms vs {a1['p50']:.1f} ms single-process "
              f"({b1['p50'] / a1['p50']:.2f}x) at 1 client; {b8['rps']:.1f} vs {a8['rps']:.1f} req/s "
              f"({b8['rps'] / a8['rps']:.2f}x) at {clients} clients; RSS {rss_b / 2**30:.2f} vs {rss_a / 2**30:.2f} GiB")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        sp = argparse.ArgumentParser(prog="single_process.py serve")
        sp.add_argument("--config-json", required=True, help="the app's args (ServeAppConfig) as JSON")
        sp.add_argument("--port", type=int, required=True)
        a = sp.parse_args(argv[1:])
        serve_single(json.loads(a.config_json), a.port)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts/ml-100k")
    ap.add_argument("--requests", type=int, default=300, help="1-client requests per app")
    ap.add_argument("--throughput-requests", type=int, default=600, help="8-client requests per app")
    ap.add_argument("--clients", type=int, default=8, help="clients of the throughput load")
    ap.add_argument("--rounds", type=int, default=6, help="alternating slices of the two apps' loads")
    ap.add_argument("--check-users", type=int, default=50, help="known users whose top-10 must be equal")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads of the single-process server (the Serve branch replicas run with 1)")  # fmt: skip
    ap.add_argument("--ingress", default="8:-1",
                    help="the Serve ingress's max_ongoing_requests:max_queued_requests (-1: no limit); the "
                    "shipped 4:4 sheds most of an 8-client load with 503s, 8:-1 gave Serve its best throughput")  # fmt: skip
    ap.add_argument("--single-only", action="store_true",
                    help="no Ray: the single-process app alone, its top-10 checked against the offline fusion")  # fmt: skip
    args = ap.parse_args(argv)
    from data_prep.artifacts import ArtifactPaths

    root = Path(args.artifacts)
    paths = ArtifactPaths(root)
    if not paths.fusion.is_file() or not paths.index_dir("metadata").is_dir():
        print(f"error: {root} has no fusion.json or metadata index; run `make demo` first", file=sys.stderr)
        return 2
    rng = random.Random(0)
    users = known_users(root)
    check = rng.sample(users, min(args.check_users, len(users)))
    one = [{"user_id": rng.choice(users), "k": 10} for _ in range(args.requests)]
    many = [{"user_id": rng.choice(users), "k": 10} for _ in range(args.throughput_requests)]
    warm = [{"user_id": u, "k": 10} for u in users[:30]]
    from serve_latency import interleaved, run_load

    with tempfile.TemporaryDirectory(prefix="q2rec-single-") as tmp:
        t0 = time.perf_counter()
        single_cfg = app_config(root, Path(tmp) / "single.sqlite3")
        server = SingleProcessServer(single_cfg, free_port(), args.threads)
        print(
            f"single process: ready in {time.perf_counter() - t0:.0f} s (pid {server.proc.pid})", flush=True
        )
        try:
            targets = {"single process": server.port}
            if args.single_only:
                from serve_latency import offline_fused

                want = offline_fused(root, check)
                differ = 0
                for u in check:
                    got, out = top10(server.port, u)
                    if got != want[u]:
                        differ += 1
                        print(f"  user {u}: single process {got or out}, offline {want[u]}")
                print(f"top-10 equal to the offline fusion for {len(check) - differ} of {len(check)} users")
            else:
                from ray import serve

                from serve.run import start_app

                t0 = time.perf_counter()
                serve_port = free_port()
                serve_cfg = app_config(root, Path(tmp) / "serve.sqlite3")
                ongoing, queued = (int(x) for x in args.ingress.split(":"))
                ingress = {"max_ongoing_requests": ongoing, "max_queued_requests": queued}
                serve_cfg["deployments"] = serve_cfg["deployments"] | {"RerankDeployment": ingress}
                start_app(serve_cfg, port=serve_port)
                print(f"Ray Serve: deployed in {time.perf_counter() - t0:.0f} s", flush=True)
                targets["Ray Serve"] = serve_port
                differ = check_equal(targets, check)
            if differ:
                print(
                    f"error: the top-10 differ for {differ} of {len(check)} users; not timing",
                    file=sys.stderr,
                )
                return 1
            for port in targets.values():
                run_load(port, "/recommend", warm, 2)
            results = {}
            for clients, bodies in ((1, one), (args.clients, many)):
                for name, r in interleaved(
                    targets, dict.fromkeys(targets, "/recommend"), bodies, clients, args.rounds
                ).items():
                    results[(name, clients)] = r
            mem = {"single process": memory([server.proc.pid])}
            if not args.single_only:
                from serve_latency import replica_pids

                mem["Ray Serve"] = memory(ray_pids(server.proc.pid))
                replicas = {dep: memory(pids) for (_, dep), pids in replica_pids(["q2rec"]).items()}
            report(results, list(targets), mem, args.clients)
            if not args.single_only:
                parts = ", ".join(f"{dep} {rss / 2**30:.2f}" for dep, (_, rss, _) in replicas.items())
                rest = mem["Ray Serve"][1] - sum(rss for _, rss, _ in replicas.values())
                print(f"Ray Serve RSS GiB by process: {parts}; the other {mem['Ray Serve'][0] - len(replicas)} "
                      f"processes (proxy, controller, raylet, GCS, workers) {rest / 2**30:.2f}")  # fmt: skip
        finally:
            if not args.single_only:
                with contextlib.suppress(Exception):
                    from ray import serve

                    serve.shutdown()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
