"""What items added online cost, and how soon they are recommended.

    python bench/online_items.py index [--items 100000] [--kind flat|ivf|hnsw] [--queries 200]
    python bench/online_items.py serve [--artifacts artifacts/ml-100k] [--items 20]   # after make demo

``index``: a catalog of ``--items`` random unit vectors (d = the encoder's 384) in the FAISS index the
kind names, then 1% and 10% of it added online through ``GrowingRetriever`` (an exact side index merged
at search time). Per stage: the cost per added item (the append alone, one item at a time, and the real
encoder embedding titles in batches), and search latency (one query, and a batch of 16) against the same index without
additions, measured in the same run (the ratio is to it), with the top-10 of each search checked against
exact search over everything.

``serve``: the app with two ingress and two retrieval replicas sharing the SQLite store (engine
``none``). ``--items`` items are added one by one through ``POST /items``; right after each answer, the
same cold-start request (a history of science-fiction films, the new title as the free-text query) is
sent until both ingress replicas have answered it with the new item. It prints the time from the POST
to the first answer with the item and to the last replica's, and how many answers after the POST lacked
it (the design says none: every request reads the catalog log's head first). Then one item is withdrawn
and as many answers checked for it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import percentile  # noqa: E402

DIM = 384
SCIFI = ["183", "50", "172", "181"]  # Alien, Star Wars, The Empire Strikes Back, Return of the Jedi


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def search_ms(retriever, queries: np.ndarray, batch: int) -> float:
    """Median ms of one search of ``batch`` queries (k = 100, as the branches ask)."""
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        t0 = time.perf_counter()
        retriever.search(queries[start : start + batch], 100)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def recall_vs_exact(retriever, vectors: np.ndarray, queries: np.ndarray) -> float:
    from actors.ranking import top_scores

    got = retriever.search(queries, 10).ids
    truth = top_scores(queries @ vectors.T, 10)[0]
    return float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))


def bench_index(n: int, kind: str, n_queries: int) -> None:
    from actors.encoder import TextEncoder
    from actors.retriever import FaissRetriever, GrowingRetriever, IndexConfig

    base_vectors = unit(n, 0)
    t0 = time.perf_counter()
    base = FaissRetriever.build(base_vectors, [str(i) for i in range(n)], IndexConfig(kind=kind))
    print(f"{kind} index over {n:,} items built in {time.perf_counter() - t0:.1f}s "
          f"(recall@10 {base.build_info['recall_at_10']})", flush=True)  # fmt: skip
    queries = unit(n_queries, 1)
    encoder = TextEncoder()
    titles = [
        f"Star Wars: Episode {i} of the Galactic Empire (2026). Genres: Action, Sci-Fi" for i in range(256)
    ]
    encoder.encode(titles[:8])  # warm
    t0 = time.perf_counter()
    encoder.encode(titles)
    encode_ms = (time.perf_counter() - t0) * 1000 / len(titles)

    rows = []
    baseline = {b: search_ms(base, queries, b) for b in (1, 16)}
    rows.append(
        ("none", 0, float("nan"), baseline[1], baseline[16], recall_vs_exact(base, base_vectors, queries))
    )
    for share in (0.01, 0.10):
        grown = GrowingRetriever(base)
        added = unit(int(n * share), 2)
        t0 = time.perf_counter()
        for i in range(len(added)):  # one at a time, as items posted one by one arrive
            grown.add(added[i : i + 1], [f"new-{i}"], i + 1)
        add_us = (time.perf_counter() - t0) * 1e6 / len(added)
        everything = np.concatenate([base_vectors, added])
        ms = {b: search_ms(grown, queries, b) for b in (1, 16)}
        rows.append(
            (f"{share:.0%}", len(added), add_us, ms[1], ms[16], recall_vs_exact(grown, everything, queries))
        )
    print(
        f"\nembedding an added item with the real encoder (batches of 256 titles): {encode_ms:.2f} ms per item\n"
    )
    print("| added online | items | append µs / item (one at a time) | search ms (1 query) | × none | search ms (16) | × none "
          "| recall@10 vs exact |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for label, count, add_us, one, sixteen, recall in rows:
        print(f"| {label} | {count:,} | {add_us:.1f} | {one:.2f} | {one / baseline[1]:.2f} | {sixteen:.2f} | "
              f"{sixteen / baseline[16]:.2f} | {recall:.3f} |")  # fmt: skip


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    payload = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, payload, resp.getheader("x-q2rec-replica", "")


def bench_serve(root: Path, port: int, n_items: int) -> None:
    from ray import serve

    from runtime.ray_cluster import init_ray
    from serve.app import build_app

    work = Path(tempfile.mkdtemp(prefix="q2rec-online-items-"))
    two = {"num_replicas": 2}
    args = {"artifacts": str(root), "engine": {"backend": "none"}, "auth": "none",
            "store": {"backend": "sqlite", "path": str(work / "state.sqlite3")},
            "deployments": {"RerankDeployment": two, "RetrievalDeployment": two}}  # fmt: skip
    init_ray(quiet=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(args), name="online", route_prefix="/")
        first, last, missing, posts, catalog_ms = [], [], 0, [], []
        for i in range(n_items):
            title = f"Star Wars: Chapter {i + 1} of the Galactic Empire"
            item = {
                "item_id": f"new-{i}",
                "title": title,
                "year": 2026,
                "genres": "Action, Adventure, Sci-Fi",
            }
            body = {"history": SCIFI, "query": title, "k": 10}
            t0 = time.perf_counter()
            status, out, _ = call(port, "POST", "/items", {"items": [item]})
            if status != 200:
                raise RuntimeError(f"POST /items: {status} {out}")
            posts.append((time.perf_counter() - t0) * 1000)
            shown: set[str] = set()
            t_first = None
            for _ in range(200):
                status, out, replica = call(port, "POST", "/recommend", body)
                catalog_ms.append(out["timings_ms"]["catalog"])
                if item["item_id"] in [x["item_id"] for x in out["items"]]:
                    t_first = t_first or time.perf_counter() - t0
                    shown.add(replica)
                else:
                    missing += 1
                if len(shown) == 2:
                    break
            first.append(t_first * 1000)
            last.append((time.perf_counter() - t0) * 1000)
        withdrawn = "new-0"
        call(port, "DELETE", f"/items/{withdrawn}")
        again = sum(withdrawn in [x["item_id"] for x in call(port, "POST", "/recommend",
                    {"history": SCIFI, "query": "Star Wars: Chapter 1 of the Galactic Empire", "k": 10})[1]["items"]]
                    for _ in range(40))  # fmt: skip
        print(f"\n{n_items} items added one by one (2 ingress + 2 retrieval replicas, SQLite store)\n")
        print("| measure | p50 ms | max ms |\n|---|---:|---:|")
        print(f"| POST /items answered | {percentile(posts, 50):.1f} | {max(posts):.1f} |")
        print(f"| POST start → first answer with the item | {percentile(first, 50):.1f} | {max(first):.1f} |")
        print(
            f"| POST start → both ingress replicas answered with it | {percentile(last, 50):.1f} | {max(last):.1f} |"
        )
        print(f"| catalog log read per request (timings_ms.catalog) | {percentile(catalog_ms, 50):.2f} | "
              f"{max(catalog_ms):.2f} |")  # fmt: skip
        print(
            f"\nanswers after a POST that lacked the new item: {missing}; "
            f"answers with a withdrawn item, of 40 after the DELETE: {again}"
        )
    finally:
        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    idx = sub.add_parser("index", help="cost per added item and search latency with 1%% and 10%% added")
    idx.add_argument("--items", type=int, default=100_000)
    idx.add_argument("--kind", choices=["flat", "ivf", "hnsw"], default="flat")
    idx.add_argument("--queries", type=int, default=320)
    srv = sub.add_parser("serve", help="time from POST /items to recommendable on every replica")
    srv.add_argument("--artifacts", type=Path, default=Path("artifacts/ml-100k"))
    srv.add_argument("--items", type=int, default=20)
    srv.add_argument("--port", type=int, default=8137)
    args = ap.parse_args(argv)
    if args.what == "index":
        bench_index(args.items, args.kind, args.queries)
    else:
        bench_serve(args.artifacts, args.port, args.items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
