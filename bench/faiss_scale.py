"""Benchmark: FAISS flat, HNSW and IVF on synthetic 384-d unit vectors (default 1M), on this machine.

Reports build time, index memory, QPS (queries in batches of 256, both cores) and recall@10 against the
exact flat search, measured in the same run. The vectors are synthetic with a low intrinsic dimension, as
real sentence embeddings have. Goal: >= 1,000 QPS at recall@10 >= 0.95.

    python bench/faiss_scale.py [--n 1000000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actors.retriever import IndexConfig, build_index

LATENT = 32


def unit(n: int, d: int, rng: np.random.Generator, projection: np.ndarray) -> np.ndarray:
    """Sentence embeddings have a low intrinsic dimension: draw clustered points in a 32-d latent space,
    project them to ``d`` dimensions, add a little isotropic noise, normalise. (Isotropic 384-d noise has
    no real neighbours, so no approximate index can find them; it says nothing about real embeddings.)"""
    centers = rng.standard_normal((1024, LATENT)).astype(np.float32)
    z = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, LATENT)).astype(np.float32)
    x = z @ projection + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
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
    projection = rng.standard_normal((LATENT, args.dim)).astype(np.float32) / np.sqrt(LATENT)
    x = unit(args.n, args.dim, rng, projection)
    q = unit(args.queries, args.dim, rng, projection)
    rows = []
    configs = [
        ("flat", IndexConfig(kind="flat"), {}),
        ("hnsw M=32 ef=64", IndexConfig(kind="hnsw", hnsw_m=32, hnsw_ef_construction=80, hnsw_ef_search=64), {}),
        ("hnsw M=32 ef=128", None, {"efSearch": 128}),
        ("hnsw M=32 ef=256", None, {"efSearch": 256}),
        ("hnsw M=32 ef=512", None, {"efSearch": 512}),
        ("ivf nlist=1024 nprobe=16", IndexConfig(kind="ivf", ivf_nlist=1024, ivf_nprobe=16), {}),
        ("ivf nlist=1024 nprobe=64", None, {"nprobe": 64}),
    ]  # fmt: skip
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
