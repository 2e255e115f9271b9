"""Benchmark: full-ranking evaluation speed, in two parts, each against its baseline in the same run.

    python bench/eval_speed.py [--items 1000000 --users 2048 --dim 64 --history 20 --repeat 2] [--skip-ml]

1. **ML and product sizes**: ML-100K (943 x 1,682), ML-1M (6,040 x 3,706) and Amazon-Scientific's shape
   (8,442 x 4,385), synthetic scores and histories of realistic length: the vectorised harness against a
   per-user Python loop, and against itself with the k best found by numpy's argpartition (the top-k as it
   was at these sizes before ``torch.topk``).
2. **A large catalog** (``--items``, 1M by default), nothing trained: random item vectors (``--dim``) and
   user vectors for a sample of ``--users`` users, Zipf-distributed histories (``--history`` items on
   average), scored per batch as a factorised model does (SASRec's ``score``: before, the logits of a torch
   matmul copied into a zeroed float32 array; after, the matmul written straight into the rows returned) and
   as popularity does (before, its count row tiled per batch; after, the one row ranked once for every user:
   ``tune.metrics.SharedRow``), then ranked and measured by ``tune.harness.evaluate_scorer``: once with
   ``rank_batch_before`` (the ranking as it was, kept here as the baseline) and once with
   ``tune.metrics.rank_batch`` (or ``SharedRow``), ``--repeat`` times in turn. Prints seconds per
   1,000 users for each phase (the best over the repeats), each phase against this box's limit (memory
   bandwidth, matmul GFLOP/s, measured here), checks that every target rank, top-20 list and metric of the
   two paths is equal, and extrapolates to the scale run's evaluation (``bench/scale.py`` at 100k users x
   1M items: 2 models x 2 splits x 100k user rows).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import numpy as np
import pandas as pd
import torch

import actors.ranking as ranking
import tune.harness
import tune.metrics
from actors.cf.base import score_batch_size
from data_prep.corpus import Corpus
from tune.metrics import MetricContext, RankedBatch, SharedRow, compute_metrics, concat, rank_batch

SIZES = {"ml-100k": (943, 1682, 106), "ml-1m": (6040, 3706, 165), "amazon-scientific": (8442, 4385, 7)}
SCALE_ROWS = {"models": 2, "splits": 2, "users": 100_000}  # bench/scale.py's evaluate stage at 1M items
INTERACTIONS_PER_USER = 35  # the scale run: 3.5M interactions for 100k users


def synthetic(n_users: int, n_items: int, mean_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    lens = np.clip(rng.poisson(mean_len, n_users), 1, n_items - 1)
    hists = [rng.choice(n_items, size=n, replace=False) for n in lens]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(n_items), h)) for h in hists])
    return scores, hists, targets


def vectorised(scores, hists, targets, ctx, batch=1024):
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


def ml_sizes() -> None:
    """The vectorised harness against the per-user loop, and against itself with the k best found by
    numpy's argpartition (as before rows from ``TORCH_TOPK_LOADED_MIN_ITEMS`` items took ``torch.topk``)."""
    rows = []
    for name, (u, i, mean_len) in SIZES.items():
        scores, hists, targets = synthetic(u, i, mean_len)
        ctx = MetricContext(i, np.random.default_rng(1).integers(1, 500, i), u)
        fast = best_of(lambda: vectorised(scores, hists, targets, ctx))  # noqa: B023  (called at once)
        with torch_topk_from(ranking.TORCH_TOPK_MIN_ITEMS):
            before = best_of(lambda: vectorised(scores, hists, targets, ctx))  # noqa: B023
            m_before = vectorised(scores, hists, targets, ctx)
        m = vectorised(scores, hists, targets, ctx)
        t1 = time.perf_counter()
        r10, n10 = per_user_loop(scores, hists, targets)
        slow = time.perf_counter() - t1
        assert abs(m["Recall@10"] - r10) < 1e-9 and abs(m["NDCG@10"] - n10) < 1e-9, "implementations disagree"
        assert m == m_before, "the two top-k paths disagree"
        rows.append((name, u, i, fast, before, slow))
    print("| size | users | items | vectorised s (all metrics) | with argpartition s (before) | speed-up | "
          "per-user loop s (Recall/NDCG only) | vs the loop |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, u, i, fast, before, slow in rows:
        print(f"| {name} | {u} | {i} | {fast:.3f} | {before:.3f} | {before / fast:.1f}x | {slow:.3f} | "
              f"{slow / fast:.1f}x |")  # fmt: skip
    print("summary: " + "; ".join(f"{n} {f:.2f}s ({b / f:.1f}x argpartition, {s / f:.1f}x the loop)"
                                  for n, _, _, f, b, s in rows))  # fmt: skip


@contextmanager
def torch_topk_from(n_items: int) -> Iterator[None]:
    """Rows from ``n_items`` items on find their k best with torch.topk while inside (torch being loaded)."""
    was = ranking.TORCH_TOPK_LOADED_MIN_ITEMS
    ranking.TORCH_TOPK_LOADED_MIN_ITEMS = n_items
    try:
        yield
    finally:
        ranking.TORCH_TOPK_LOADED_MIN_ITEMS = was


# --- the ranking as it was before the chunked top-k and the one-pass target rank: the baseline (copies of
# tune.metrics.rank_batch and of actors.ranking's mask_items, topk and target_ranks as they were) ---------


class Clock:
    """``clock(name)`` adds the seconds since the previous call (or the start) to ``seconds[name]``."""

    def __init__(self, seconds: dict[str, float] | None) -> None:
        self.seconds, self.last = seconds, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self.seconds is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now


def mask_items_before(scores: np.ndarray, item_lists: Sequence[np.ndarray]) -> np.ndarray:
    lengths = np.fromiter((len(h) for h in item_lists), dtype=np.int64, count=len(item_lists))
    if lengths.sum():
        rows = np.repeat(np.arange(len(item_lists)), lengths)
        scores[rows, np.concatenate([np.asarray(h, dtype=np.int64) for h in item_lists])] = -np.inf
    return scores


def topk_before(scores: np.ndarray, k: int) -> np.ndarray:
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k == n_items or k > n_items // 4:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    if n_items >= 65_536 and scores.dtype in (np.float32, np.float64):
        part = torch.topk(
            torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=False
        ).indices.numpy()
    else:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = part_scores.min(axis=1, keepdims=True)
    ties_total = (scores == kth).sum(axis=1)
    ties_kept = (part_scores == kth).sum(axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    out = np.take_along_axis(part, order, axis=1)
    for row in np.flatnonzero(ties_total != ties_kept):
        cand = np.flatnonzero(scores[row] >= kth[row, 0])
        out[row] = cand[np.argsort(-scores[row, cand], kind="stable")[:k]]
    return out


def target_ranks_before(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = np.arange(len(targets))
    t_score = scores[rows, targets][:, None]
    higher = (scores > t_score).sum(axis=1)
    tied_before = ((scores == t_score) & (np.arange(scores.shape[1])[None, :] < targets[:, None])).sum(axis=1)
    return 1 + higher + tied_before


def rank_batch_before(
    scores: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    max_k: int,
    seconds: dict[str, float] | None = None,
) -> RankedBatch:
    """``tune.metrics.rank_batch`` as it was, adding each phase's seconds to ``seconds``."""
    clock = Clock(seconds)
    if not np.isfinite(scores).any(axis=1).all():
        raise ValueError("a score row has no finite value")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    clock("checks")
    scores = np.array(scores, dtype=np.float32, copy=True)
    clock("copy")
    scores = mask_items_before(scores, histories)
    clock("mask")
    top = topk_before(scores, max_k)
    clock("topk")
    ranks = target_ranks_before(scores, targets)
    clock("target_ranks")
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    return RankedBatch(top, ranks, np.asarray(targets), lens)


# --- the large catalog ----------------------------------------------------------------------------------


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_limits(gib: float, batch: int, items: torch.Tensor) -> dict[str, float]:
    """This box's memory bandwidth in GB/s over a ``gib`` GiB float32 array (read: a numpy sum; write: a
    fill; copy: bytes read + written), and torch's float32 matmul GFLOP/s at (batch, dim) x (dim, n_items)
    into a preallocated output: best of 3 each."""
    a = np.ones(int(gib * 2**30) // 4, dtype=np.float32)
    b = np.empty_like(a)
    users = torch.randn(batch, items.shape[1])
    out = torch.empty(batch, items.shape[0])
    flops = 2 * users.numel() * items.shape[0]
    return {
        "read": a.nbytes / best_of(a.sum) / 1e9,
        "write": b.nbytes / best_of(partial(b.fill, 2.0)) / 1e9,
        "copy": 2 * a.nbytes / best_of(partial(np.copyto, b, a)) / 1e9,
        "matmul": flops / best_of(partial(torch.mm, users, items.T, out=out)) / 1e9,
    }


def zipf_items(rng: np.random.Generator, n_items: int, size: int) -> np.ndarray:
    """``size`` item draws, the item of rank r in a random popularity order drawn with weight ``1 / r``."""
    cdf = np.cumsum(1.0 / np.arange(1, n_items + 1))
    order = rng.permutation(n_items)
    return order[np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1]), n_items - 1)]


def large_catalog(n_users: int, n_items: int, dim: int, mean_len: int, seed: int = 0):
    """(corpus, popularity counts, user vectors, item vectors) of a synthetic catalog, nothing trained: the
    counts of the scale run's 3.5M Zipf interactions, and Zipf histories and targets for ``n_users``."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(
        zipf_items(rng, n_items, INTERACTIONS_PER_USER * SCALE_ROWS["users"]), minlength=n_items
    )
    lens = np.maximum(rng.poisson(mean_len, n_users), 1)
    drawn = zipf_items(rng, n_items, int(lens.sum()) + 2 * n_users)
    seqs = np.split(drawn[: lens.sum()], np.cumsum(lens)[:-1])
    valid, test = drawn[lens.sum() :: 2], drawn[lens.sum() + 1 :: 2]
    items = pd.DataFrame({"item_id": np.arange(n_items)})
    corpus = Corpus(items, np.arange(n_users).astype(str), seqs, valid, test)
    user_vecs = torch.from_numpy(rng.standard_normal((n_users, dim), dtype=np.float32))
    item_vecs = torch.from_numpy(rng.standard_normal((n_items, dim), dtype=np.float32) / dim**0.5)
    return corpus, counts, user_vecs, item_vecs


@contextmanager
def timed(seconds: dict[str, float], namespace: object, **fns: Callable | None) -> Iterator[None]:
    """Inside, ``namespace.<name>`` is ``fns[name]`` (its own function when None), each call's seconds
    added to ``seconds[name]``."""
    saved = {name: getattr(namespace, name) for name in fns}

    def wrap(name: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

        return call

    for name, fn in fns.items():
        setattr(namespace, name, wrap(name, fn or saved[name]))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(namespace, name, fn)


def evaluate_phases(scorer: Callable, corpus: Corpus, ctx: MetricContext, batch: int, before: bool):
    """(seconds per phase, metrics, every batch's RankedBatch in one) of ``tune.harness.evaluate_scorer``
    on ``test``, ranking with ``rank_batch_before`` or with ``tune.metrics.rank_batch``."""
    seconds: dict[str, float] = {}
    batches: list[RankedBatch] = []
    if isinstance(scorer, SharedRow):  # one row for every user, ranked once (tune.metrics.SharedRow)
        rank = scorer.rank

        def shared(*args, **kwargs) -> RankedBatch:
            t0 = time.perf_counter()
            batches.append(rank(*args, **kwargs))
            seconds["shared row"] = seconds.get("shared row", 0.0) + time.perf_counter() - t0
            return batches[-1]

        scorer.rank = shared  # timed for this run only: the class's method again afterwards
        try:
            t0 = time.perf_counter()
            metrics = tune.harness.evaluate_scorer(scorer, corpus, "test", ctx, batch_size=batch)
            seconds["total"] = time.perf_counter() - t0
        finally:
            del scorer.rank
        seconds["score"] = 0.0
        seconds["metrics"] = seconds["total"] - seconds["shared row"]
        return seconds, metrics, concat(batches)
    ranker = partial(rank_batch_before, seconds=seconds) if before else tune.metrics.rank_batch

    def recorded(*args, **kwargs) -> RankedBatch:
        batches.append(ranker(*args, **kwargs))
        return batches[-1]

    def timed_scorer(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        out = scorer(users, histories)
        seconds["score"] = seconds.get("score", 0.0) + time.perf_counter() - t0
        return out

    steps = {} if before else {"chunk_maxima": None, "topk": None, "target_ranks": None}  # of rank_batch
    with timed(seconds, tune.harness, rank_batch=recorded), timed(seconds, tune.metrics, **steps):
        t0 = time.perf_counter()
        metrics = tune.harness.evaluate_scorer(timed_scorer, corpus, "test", ctx, batch_size=batch)
        seconds["total"] = time.perf_counter() - t0
    if not before:  # the maxima pass and the checks on its result (the maxima also serve the top-k)
        seconds["checks"] = seconds["rank_batch"] - seconds["topk"] - seconds["target_ranks"]
    seconds["metrics"] = seconds["total"] - seconds.pop("rank_batch") - seconds["score"]
    return seconds, metrics, concat(batches)


PHASES = ("score", "checks", "copy", "mask", "topk", "target_ranks", "shared row", "metrics", "total")
RANKING = ("checks", "copy", "mask", "topk", "target_ranks", "shared row")  # the phases of rank_batch


def phase_limits(limits: dict[str, float], n_items: int, dim: int, factorised: bool) -> dict[str, float]:
    """Seconds per 1,000 users of each phase at this box's limit: the matmul for the scoring; one copy of
    the rows for the copy; one read pass over the rows for the checks, the top-k before (after, it reads
    only the maxima the checks computed) and the target rank; and the ranking's least: the two read passes
    it makes now. Popularity's per-user floor is ~0: its one row is ranked once (``SharedRow``)."""
    if not factorised:  # popularity's one row is ranked once (SharedRow): no pass over a row per user
        return {"score": 0.0, "ranking": 0.0}
    rows = 4 * n_items * 1000  # bytes of 1,000 score rows
    one_read = rows / (limits["read"] * 1e9)
    matmul = 2 * dim * n_items * 1000 / (limits["matmul"] * 1e9)
    return {"score": matmul, "checks": one_read, "copy": 2 * rows / (limits["copy"] * 1e9), "topk": one_read,
            "target_ranks": one_read, "ranking": 2 * one_read}  # fmt: skip


def catalog_run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Seconds per 1,000 users, per scorer, path (before, after, limit) and phase; prints the tables."""
    with torch.no_grad():  # scoped: the small run in the tests shares its process with training tests
        return _catalog_run(args)


def _catalog_run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    batch = args.batch or score_batch_size(args.items)
    print(f"\n## {args.users:,} users x {args.items:,} items, dim {args.dim}, batches of {batch} users")
    print(f"box: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    corpus, counts, user_vecs, item_vecs = large_catalog(args.users, args.items, args.dim, args.history)
    limits = machine_limits(args.bandwidth_gib, batch, item_vecs)
    print(f"limits: read {limits['read']:.1f} GB/s, write {limits['write']:.1f} GB/s, copy {limits['copy']:.1f} "
          f"GB/s (read + written), torch matmul {limits['matmul']:.1f} GFLOP/s at ({batch}, {args.dim}) x "
          f"({args.dim}, {args.items:,})")  # fmt: skip
    ctx = MetricContext(args.items, counts, SCALE_ROWS["users"])
    pop_row = counts.astype(np.float32)

    def popularity(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:  # Popularity.score
        return np.tile(pop_row, (len(histories), 1))

    def factorised_before(
        users: np.ndarray, histories: list[np.ndarray]
    ) -> np.ndarray:  # SASRec.score, before
        out = np.zeros((len(users), args.items), dtype=np.float32)
        out[:] = (user_vecs[users] @ item_vecs.T).numpy()
        return out

    def factorised(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:  # SASRec.score: in place
        out = np.empty((len(users), args.items), dtype=np.float32)
        torch.matmul(user_vecs[users], item_vecs.T, out=torch.from_numpy(out))
        return out

    n_users = len(corpus.eval_users("test"))
    per_1k: dict[str, dict[str, dict[str, float]]] = {}
    scorers = {"popularity": (popularity, SharedRow(pop_row)), "factorised": (factorised_before, factorised)}
    for name, (scorer_before, scorer) in scorers.items():
        best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
        for _ in range(args.repeat):  # before and after in turn; each phase's best over the repeats
            out = {}
            for path in ("before", "after"):
                before = path == "before"
                seconds, metrics, ranked = evaluate_phases(scorer_before if before else scorer, corpus, ctx, batch,
                                                           before)  # fmt: skip
                out[path] = metrics, ranked
                for phase, s in seconds.items():
                    best[path][phase] = min(best[path].get(phase, np.inf), s * 1000 / n_users)
            (m_before, r_before), (m_after, r_after) = out["before"], out["after"]
            np.testing.assert_array_equal(r_after.ranks, r_before.ranks, err_msg=f"{name}: ranks differ")
            np.testing.assert_array_equal(r_after.top, r_before.top, err_msg=f"{name}: top lists differ")
            assert m_after == m_before, f"{name}: metrics differ"
        for path in ("before", "after"):
            best[path]["ranking"] = sum(best[path].get(p, 0.0) for p in RANKING)
        best["limit"] = phase_limits(limits, args.items, args.dim, factorised=name == "factorised")
        per_1k[name] = best
    print(f"equal before and after on {n_users:,} users x 2 scorers: every target rank, every top-{r_after.top.shape[1]} "
          "list, every metric")  # fmt: skip
    print_table(per_1k, args.repeat)
    print_extrapolation(per_1k)
    return per_1k


def print_table(per_1k: dict[str, dict[str, dict[str, float]]], repeat: int) -> None:
    print(
        f"\nseconds per 1,000 users (test split), best of {repeat}; limit: the phase at this box's limits above"
    )
    print("| scorer | phase | before s | after s | speed-up | limit s | after at % of limit |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, runs in per_1k.items():
        for phase in (*PHASES[:-1], "ranking", "total"):
            b, a = runs["before"].get(phase), runs["after"].get(phase)
            lim = runs["limit"].get(phase) if phase != "topk" else None
            cells = [f"{b:.3f}" if b is not None else "", f"{a:.3f}" if a is not None else "—",
                     f"{b / a:.1f}x" if a and b else "", f"{lim:.3f}" if lim else "",
                     f"{100 * lim / a:.0f}%" if lim and a else ""]  # fmt: skip
            label = f"**{phase}** (rank_batch)" if phase == "ranking" else phase
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")


def print_extrapolation(per_1k: dict[str, dict[str, dict[str, float]]]) -> None:
    """The scale run's evaluate stage from the seconds per 1,000 users: linear in the user rows."""
    thousands = SCALE_ROWS["splits"] * SCALE_ROWS["users"] / 1000  # per model
    rows = SCALE_ROWS["models"] * thousands * 1000
    print(f"\nextrapolated to the scale run's evaluate stage, {rows:,.0f} user rows ({SCALE_ROWS['models']} models x "
          f"{SCALE_ROWS['splits']} splits x {SCALE_ROWS['users']:,} users; an extrapolation, not measured at that "
          "size; SASRec's transformer for its user vectors left out); goal 300 s:")  # fmt: skip
    for path in ("before", "after"):
        by_model = {n: per_1k[n][path]["total"] * thousands for n in per_1k}
        parts = ", ".join(f"{n} {s:,.0f} s" for n, s in by_model.items())
        score = sum(per_1k[n][path]["score"] * thousands for n in per_1k)
        ranking = sum(per_1k[n][path]["ranking"] * thousands for n in per_1k)
        print(
            f"- {path}: {sum(by_model.values()):,.0f} s ({parts}); scoring {score:,.0f} s, ranking {ranking:,.0f} s"
        )
    floor = sum((per_1k[n]["limit"]["score"] + per_1k[n]["limit"]["ranking"]) * thousands for n in per_1k)
    print(
        f"- at this box's limits (scoring at the limit, the ranking's two read passes, no metrics): {floor:,.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000, help="catalog size of the large-catalog part")
    ap.add_argument("--users", type=int, default=2048, help="sampled users of the large-catalog part")
    ap.add_argument("--dim", type=int, default=64, help="item and user vector size")
    ap.add_argument("--history", type=int, default=20, help="mean history length")
    ap.add_argument("--batch", type=int, help="users per batch (default: score_batch_size(items))")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each path, the best phase times kept")
    ap.add_argument(
        "--bandwidth-gib", type=float, default=1.0, help="array size of the bandwidth measurement"
    )
    ap.add_argument("--skip-ml", action="store_true", help="only the large-catalog part")
    args = ap.parse_args(argv)
    if not args.skip_ml:
        ml_sizes()
    catalog_run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
