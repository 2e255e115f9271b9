"""Benchmark: vectorised full-ranking evaluation against a per-user Python loop, in the same run.

Sizes: ML-100K (943 x 1,682) and ML-1M (6,040 x 3,706), synthetic scores and histories of realistic
length. Prints a table and a one-line summary. Run: ``make bench`` or ``python bench/eval_speed.py``.
"""

from __future__ import annotations

import time

import numpy as np

from tune.metrics import MetricContext, compute_metrics, rank_batch

SIZES = {"ml-100k": (943, 1682, 106), "ml-1m": (6040, 3706, 165)}


def synthetic(n_users: int, n_items: int, mean_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    lens = np.clip(rng.poisson(mean_len, n_users), 1, n_items - 1)
    hists = [rng.choice(n_items, size=n, replace=False) for n in lens]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(n_items), h)) for h in hists])
    return scores, hists, targets


def vectorised(scores, hists, targets, ctx, batch=1024):
    from tune.metrics import concat

    ranked = concat([rank_batch(scores[i : i + batch], hists[i : i + batch], targets[i : i + batch], 20)
                     for i in range(0, len(targets), batch)])  # fmt: skip
    return compute_metrics(ranked, ctx)


def per_user_loop(scores, hists, targets, k=10):
    """The baseline: one user at a time, the way a straightforward implementation does it."""
    hits, ndcg = [], []
    for s, h, t in zip(scores, hists, targets, strict=True):
        s = s.copy()
        s[h] = -np.inf
        order = np.argsort(-s, kind="stable")
        rank = int(np.flatnonzero(order == t)[0]) + 1
        hits.append(rank <= k)
        ndcg.append(1 / np.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(hits)), float(np.mean(ndcg))


def main() -> None:
    rows = []
    for name, (u, i, mean_len) in SIZES.items():
        scores, hists, targets = synthetic(u, i, mean_len)
        ctx = MetricContext(i, np.random.default_rng(1).integers(1, 500, i), u)
        t0 = time.perf_counter()
        m = vectorised(scores, hists, targets, ctx)
        t1 = time.perf_counter()
        r10, n10 = per_user_loop(scores, hists, targets)
        t2 = time.perf_counter()
        assert abs(m["Recall@10"] - r10) < 1e-9 and abs(m["NDCG@10"] - n10) < 1e-9, "implementations disagree"
        rows.append((name, u, i, t1 - t0, t2 - t1))
    print(
        "| size | users | items | vectorised s (all metrics) | per-user loop s (Recall/NDCG only) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, u, i, fast, slow in rows:
        print(f"| {name} | {u} | {i} | {fast:.3f} | {slow:.3f} | {slow / fast:.1f}x |")
    print("summary: " + "; ".join(f"{n} {f:.2f}s ({s / f:.1f}x the loop)" for n, _, _, f, s in rows))


if __name__ == "__main__":
    main()
