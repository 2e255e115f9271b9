"""Overload: the same ramp of clients against the app with and without load shedding, and one heavy user
beside the others.

    python bench/overload.py [--artifacts artifacts/ml-100k] [--seconds 30] [--port 8000]   # after make demo

Ramp: 1, 8, 32 and 64 clients, each sending one ``POST /recommend`` at a time (known users and cold-start
histories, mixed), for ``--seconds`` each; then one client again, and the time until its rolling p50 (over
10 requests) is back within 1.2x of the first 1-client p50. A client told 503 waits its Retry-After before
the next request, as a client of a shedding service should (``--no-backoff``: it retries at once, a retry
storm). In the same run, engine ``none``:

- ``queueing``: the ingress as before shedding existed (``max_ongoing_requests`` 100, no queue limit);
- ``shed N+M``: at most N requests in the ingress and M waiting for it, then 503 + Retry-After at once,
  for each ``--limits N+M`` (default: the shipped config's).

Goal (shedding, 64 clients): p99 of accepted requests within 2x the 1-client p99 (or the request timeout,
whichever is lower), the rest 503, no 500, recovery to the 1-client p50 within 5 s.

Heavy user: the shedding app, the SQLite store; 4 clients ask for the same user whose stored history is at
its cap (``store.max_events``, 1,000 by default, posted first in batches of 1,000), while 4 other clients
ask for other users. Goal: the others keep >= 80% of the req/s they have with 4 clients for other users
in place of the heavy ones (measured in the same run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from serve_latency import percentile, run_clients  # bench/ is on the path of this script

STAGES = (1, 8, 32, 64)
QUEUEING = {"RerankDeployment": {"num_cpus": 0, "max_ongoing_requests": 100, "max_queued_requests": -1}}


def bodies(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    known = [{"user_id": str(rng.randint(1, 943)), "k": 10} for _ in range(300)]
    cold = [{"history": [str(rng.randint(1, 1682)) for _ in range(4)], "k": 10} for _ in range(100)]
    mixed = known + cold
    rng.shuffle(mixed)
    return mixed


def load(port: int, path: str, make_body, clients: int, seconds: float, backoff: bool = True,
         counted=lambda c: True) -> dict[str, Any]:  # fmt: skip
    """``clients`` threads, one request at a time each, for ``seconds``: statuses and accepted latencies of
    the clients ``counted(c)`` is true for."""
    statuses: Counter = Counter()
    accepted: list[float] = []
    retry_after: Counter = Counter()
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        j = 0
        while time.perf_counter() < stop:
            body = json.dumps(make_body(c, j)).encode()
            j += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status, ra = r.status, r.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status, ra = 0, None  # connection error
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if counted(c):
                    statuses[status] += 1
                    if status == 200:
                        accepted.append(ms)
                    if status == 503:
                        retry_after[ra] += 1
            if status == 503 and backoff and ra:
                time.sleep(min(float(ra), max(0.0, stop - time.perf_counter())))
        conn.close()

    wall = run_clients(client, clients)
    n = sum(statuses.values())
    return {"clients": clients, "n": n, "statuses": dict(sorted(statuses.items())), "ok_rps": len(accepted) / wall,
            "p50": percentile(accepted, 50), "p99": percentile(accepted, 99),
            "shed": statuses.get(503, 0) / max(n, 1), "retry_after": dict(retry_after)}  # fmt: skip


def recovery(port: int, path: str, pool: list[dict], target_p50: float, limit_s: float = 30.0) -> float:
    """Seconds until the rolling p50 of one client's last 10 requests is within 1.2x ``target_p50``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    window: list[float] = []
    t_start = time.perf_counter()
    j = 0
    while time.perf_counter() - t_start < limit_s:
        t0 = time.perf_counter()
        conn.request(
            "POST", path, json.dumps(pool[j % len(pool)]).encode(), {"Content-Type": "application/json"}
        )
        r = conn.getresponse()
        r.read()
        j += 1
        if r.status == 200:
            window = [*window[-9:], (time.perf_counter() - t0) * 1000]
        if len(window) == 10 and statistics.median(window) <= 1.2 * target_p50:
            return time.perf_counter() - t_start
    return float("inf")


def ramp(port: int, label: str, seconds: float, backoff: bool) -> tuple[list[dict], float]:
    pool = bodies(0)
    path = "/recommend"
    load(port, path, lambda c, j: pool[(c * 7 + j) % len(pool)], 2, 3)  # warm
    rows = []
    for clients in STAGES:
        rows.append(load(port, path, lambda c, j: pool[(c * 7 + j) % len(pool)], clients, seconds, backoff))
        print(f"  {label}: {clients} clients: {rows[-1]}", flush=True)
    return rows, recovery(port, path, pool, rows[0]["p50"])


def heavy_user(port: int, seconds: float, max_events: int) -> dict[str, float]:
    """Others' req/s with 4 clients on other users, then with 4 clients on one user at the history cap."""
    heavy = "heavy-user"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for start in range(0, max_events + 1000, 1000):  # past the cap: the oldest are dropped
        items = [str(1 + (start + i) % 1682) for i in range(1000)]
        conn.request("POST", f"/users/{heavy}/events", json.dumps({"item_ids": items}).encode(),
                     {"Content-Type": "application/json"})  # fmt: skip
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
    conn.close()
    rng = random.Random(1)
    users = [str(rng.randint(1, 943)) for _ in range(500)]

    def body(heavy_on: bool):
        def make(c: int, j: int) -> dict:
            if c < 4 and heavy_on:
                return {"user_id": heavy, "k": 10}
            return {"user_id": users[(c * 31 + j) % len(users)], "k": 10}

        return make

    out = {}
    for label, heavy_on in (("baseline", False), ("heavy", True)):
        # clients 0-3 ask for the heavy user (or, as the baseline, for others); 4-7, the others, are measured
        r = load(port, "/recommend", body(heavy_on), 8, seconds, backoff=False, counted=lambda c: c >= 4)
        out[f"{label}_rps"], out[f"{label}_p50"] = r["ok_rps"], r["p50"]
    out["ratio"] = out["heavy_rps"] / out["baseline_rps"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts/ml-100k")
    ap.add_argument("--seconds", type=float, default=30.0, help="per ramp stage")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument(
        "--limits", default="", help="N+M,...: ingress requests in flight + queued (default: shipped)"
    )
    ap.add_argument("--no-backoff", action="store_true", help="clients retry a 503 at once (a retry storm)")
    ap.add_argument("--no-heavy", action="store_true", help="skip the heavy-user measurement")
    args = ap.parse_args(argv)
    from data_prep.artifacts import ArtifactPaths

    if not ArtifactPaths(Path(args.artifacts)).fusion.is_file():
        print(f"error: {args.artifacts} has no fusion.json; run `make demo` first", file=sys.stderr)
        return 2
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeAppConfig
    from serve.run import start_app

    with tempfile.TemporaryDirectory(prefix="q2rec-overload-") as tmp:
        base = {"artifacts": args.artifacts, "engine": {"backend": "none"}, "auth": "none",
                "store": {"backend": "sqlite", "path": str(Path(tmp) / "state.sqlite3")}}  # fmt: skip
        shipped = ServeAppConfig(**base).deployments["RerankDeployment"]
        limits = (
            args.limits.split(",")
            if args.limits
            else [f"{shipped.max_ongoing_requests}+{shipped.max_queued_requests}"]
        )
        apps = {"queueing": QUEUEING}
        for lim in limits:
            n, m = (int(x) for x in lim.split("+"))
            apps[f"shed {n}+{m}"] = {
                "RerankDeployment": {"num_cpus": 0, "max_ongoing_requests": n, "max_queued_requests": m}
            }
        results = {}
        for i, (name, deployments) in enumerate(apps.items()):
            app = build_app(base | {"deployments": deployments})
            if i == 0:
                start_app(base, port=args.port, app=app, name="overload", request_timeout_s=10)
            else:
                serve.run(app, name="overload", route_prefix="/")
            results[name] = ramp(args.port, name, args.seconds, not args.no_backoff)
        heavy = None
        if not args.no_heavy:  # on the last app
            heavy = heavy_user(args.port, args.seconds, ServeAppConfig(**base).store.max_events)
        serve.shutdown()

    print("\n| ingress | clients | requests | 200 | 503 | other | p50 ms | p99 ms | ok req/s | shed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (rows, _) in results.items():
        for r in rows:
            st = r["statuses"]
            other = sum(v for k, v in st.items() if k not in (200, 503))
            print(f"| {name} | {r['clients']} | {r['n']} | {st.get(200, 0)} | {st.get(503, 0)} | {other} | "
                  f"{r['p50']:.1f} | {r['p99']:.1f} | {r['ok_rps']:.1f} | {r['shed']:.1%} |")  # fmt: skip
    print("\n| ingress | 64-client p99 / 1-client p99 | recovery to 1-client p50 (s) | Retry-After on 503 |")
    print("|---|---:|---:|---|")
    for name, (rows, rec) in results.items():
        print(
            f"| {name} | {rows[-1]['p99'] / rows[0]['p99']:.2f} | {rec:.1f} | {rows[-1]['retry_after'] or '-'} |"
        )
    if heavy is None:
        return 0
    print("\n| heavy user (stored history at its cap) | others' req/s | others' p50 ms |\n|---|---:|---:|")
    print(f"| 4 clients on other users | {heavy['baseline_rps']:.1f} | {heavy['baseline_p50']:.1f} |")
    print(f"| 4 clients on the heavy user | {heavy['heavy_rps']:.1f} | {heavy['heavy_p50']:.1f} |")
    print(f"| ratio (goal >= 0.8) | {heavy['ratio']:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
