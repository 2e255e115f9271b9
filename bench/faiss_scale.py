"""Benchmark: FAISS flat, HNSW and IVF on synthetic 384-d unit vectors (default 1M), on this machine.

Reports build time, index memory, single-thread-batch QPS (queries in batches of 256) and recall@10
against the exact flat search, measured in the same run. Goal: >= 1,000 QPS at recall@10 >= 0.95.

    python bench/faiss_scale.py [--n 1000000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actors.retriever import IndexConfig, build_index


def unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    # clustered data, closer to real embeddings than isotropic noise
    centers = rng.standard_normal((max(n // 1000, 16), d)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def index_bytes(index) -> int:
    import faiss

    return len(faiss.serialize_index(index))


def timed_search(index, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    ids = np.vstack([index.search(q[i : i + 256], k)[1] for i in range(0, len(q), 256)])
    return ids, len(q) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = unit(args.n, args.dim, rng)
    q = unit(args.queries, args.dim, rng)
    rows = []
    configs = [
        ("flat", IndexConfig(kind="flat"), {}),
        (
            "hnsw M=32 ef=64",
            IndexConfig(kind="hnsw", hnsw_m=32, hnsw_ef_construction=80, hnsw_ef_search=64),
            {},
        ),
        ("hnsw M=32 ef=128", None, {"efSearch": 128}),
        ("ivf nlist=4096 nprobe=16", IndexConfig(kind="ivf", ivf_nlist=4096, ivf_nprobe=16), {}),
        ("ivf nlist=4096 nprobe=32", None, {"nprobe": 32}),
    ]
    truth = None
    index = None
    for name, cfg, tweak in configs:
        build_s = 0.0
        if cfg is not None:
            t0 = time.perf_counter()
            index = build_index(x, cfg)
            build_s = time.perf_counter() - t0
        if "efSearch" in tweak:
            index.hnsw.efSearch = tweak["efSearch"]
        if "nprobe" in tweak:
            index.nprobe = tweak["nprobe"]
        ids, qps = timed_search(index, q)
        if truth is None:
            truth = ids
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
        rows.append((name, build_s, index_bytes(index) / 2**20, qps, recall))
        print(f"  {name}: build {build_s:.1f}s qps {qps:.0f} recall@10 {recall:.3f}", flush=True)
    flat_qps = rows[0][3]
    print(f"\n{args.n:,} x {args.dim}-d vectors, {args.queries} queries in batches of 256, 2 cores\n")
    print("| index | build s | memory MiB | QPS | QPS / flat | recall@10 vs exact |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, b, mem, qps, rec in rows:
        print(f"| {name} | {b:.1f} | {mem:.0f} | {qps:.0f} | {qps / flat_qps:.1f}x | {rec:.3f} |")
    ok = [r for r in rows if r[3] >= 1000 and r[4] >= 0.95]
    best = max(ok, key=lambda r: r[3]) if ok else max(rows[1:], key=lambda r: r[4])
    print(f"summary: best meeting the goal: {best[0]} {best[3]:.0f} QPS at recall@10 {best[4]:.3f} "
          f"({'goal met' if ok else 'goal NOT met'}); flat {flat_qps:.0f} QPS")  # fmt: skip


if __name__ == "__main__":
    main()
