"""Search trials over each user's candidates against trials over every item: cost and quality.

    python bench/candidate_trials.py [--dataset amazon-scientific] [--cf ease,sasrec] [--trials 100]
    python bench/candidate_trials.py --cost-only      # the trial cost at 22,363 x 12,101 and 100,000 x 1M

Quality, on a dataset small enough for both (needs its trained models and metadata index): the valid
branches computed both ways (``RetrievalParts``: every item; ``RetrievalCandidates``: each user's
candidates), then for each backbone

- one trial's cost both ways, and the agreement of 20 random configs' valid NDCG@10 and fused top-10;
- three searches of ``--trials`` each: the retrieval weights searched over every item, searched over the
  candidates, and not searched (``last`` = 1: what a catalog above the trial budget got before the
  candidates); each search's best config evaluated exactly on test (every item scored), with the paired
  bootstrap interval of its test NDCG@10 against the fixed-weight one.

Cost, on random unit vectors and random CF rows of the shapes the sizes give (``--cost-only`` runs only this):
one trial over the candidates at the product catalog of the issue (22,363 users x 12,101 items, full rows)
and at a million items (100,000 users, top-N lists), and, where it fits in memory, one over every item.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actors.branch import BranchOutput, RowStats
from actors.fusion_file import TunedFusion
from actors.retrieval_query import QueryParts, RetrievalWeights
from data_prep.artifacts import ArtifactPaths
from tune.branches import BranchScores, evaluate_fused, fused_lists
from tune.candidates import RetrievalCandidates
from tune.harness import evaluation_corpus, metric_context
from tune.metrics import paired_bootstrap
from tune.retrieval_parts import RetrievalParts
from tune.search import available_weights, run_search, to_fusion

DIM, CANDIDATES = 384, 700  # the encoder's dimension; about the candidates per user measured on Amazon


def random_config(rng: random.Random) -> dict:
    return {"method": rng.choice(["fixed", "adaptive", "rrf"]), "norm": rng.choice(["zscore", "minmax"]),
            "n": rng.choice([20, 50, 100]), "alpha": rng.random(), "a": rng.uniform(-3, 3),
            "b": rng.uniform(-1, 1), "c": rng.uniform(-3, 3), "confidence": "margin", "rrf_k": 60.0}  # fmt: skip


def random_weights(rng: random.Random, names: tuple[str, ...]) -> RetrievalWeights:
    return RetrievalWeights(**{w: rng.choice([0.0, rng.uniform(0, 2)]) for w in names} | {"last": 1.0})


def trial_seconds(b: BranchScores, cfg, ctx, weights: RetrievalWeights) -> tuple[float, float]:
    t0 = time.perf_counter()
    ndcg = evaluate_fused(b, to_fusion(cfg), ctx, ks=(10,), weights=weights)["NDCG@10"]
    return time.perf_counter() - t0, ndcg


def quality(paths: ArtifactPaths, cfs: list[str], trials: int) -> None:
    from training.cf import load_trained
    from tune.branches_store import compute, load_or_compute

    corpus = evaluation_corpus(paths)
    ctx = metric_context(corpus)
    names = available_weights(paths)
    print(f"## {paths.root.name}: {len(corpus.eval_users('valid')):,} users x {corpus.n_items:,} items, "
          f"weights {', '.join(names)}\n")  # fmt: skip
    rows = []
    for cf in cfs:
        full, test = (load_or_compute(paths, corpus, s, cf) for s in ("valid", "test"))
        if full.parts is None:
            print(f"{cf}: the valid branches hold no part rows (above the trial budget); nothing to compare")
            continue
        t0 = time.perf_counter()
        cand = compute(paths, corpus, "valid", load_trained(paths, cf), RetrievalWeights(), candidates=True)
        build_s = time.perf_counter() - t0
        m = cand.candidates.ids.shape[1]
        rng = random.Random(0)
        agree, diffs, secs = [], [], {"full": [], "cand": []}
        for _ in range(20):
            cfg, w = random_config(rng), random_weights(rng, names)
            (sf, nf), (sc, nc) = trial_seconds(full, cfg, ctx, w), trial_seconds(cand, cfg, ctx, w)
            secs["full"].append(sf)
            secs["cand"].append(sc)
            diffs.append(nc - nf)
            a = fused_lists(full.with_weights(w), to_fusion(cfg), 10)[0]
            b = fused_lists(cand.with_weights(w), to_fusion(cfg), 10)[0]
            agree.append(float(np.mean((np.sort(a, axis=1)[:, :, None] == b[:, None, :]).any(axis=2))))
        tf, tc = np.median(secs["full"]), np.median(secs["cand"])
        print(f"{cf}: candidates built in {build_s:.0f} s, up to {m} per user; one trial {tf:.2f} s over every "
              f"item, {tc:.2f} s over the candidates ({tf / tc:.1f}x); 20 random configs: valid NDCG@10 "
              f"differs by {np.mean(np.abs(diffs)):.4f} on average (max {np.max(np.abs(diffs)):.4f}), "
              f"fused top-10 overlap {np.mean(agree):.3f} (min {np.min(agree):.3f})")  # fmt: skip
        results = {}
        for label, branches, tuned in (("every item", full, names), ("candidates", cand, names),
                                       ("fixed weights (before)", full, ())):  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                out = run_search(branches, ctx, Path(tmp), trials, tuned=tuned, name="bench")
            tuned_fusion = TunedFusion.of(out, f"{label} search")
            cfg, w = tuned_fusion.config, tuned_fusion.weights
            ids, _ = fused_lists(test.with_weights(w), cfg, 10)
            hit = ids == test.targets[:, None]
            ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, corpus.n_items + 1)
            results[label] = (out, ranks)
        base = results["fixed weights (before)"][1]
        for label, (out, ranks) in results.items():
            pb = paired_bootstrap(ranks, base)
            ndcg = float(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)))
            w = {k: round(v, 2) for k, v in out["weights"].items() if v}
            rows.append((cf, label, out["seconds"] / out["trials"], out["valid"]["NDCG@10"], ndcg,
                         pb["diff"], pb["ci95_low"], pb["ci95_high"], w))  # fmt: skip
    print(f"\n{trials} trials per search; test NDCG@10 of each search's best config, every item scored\n")
    print("| backbone | weights searched over | s/trial | valid NDCG@10 | test NDCG@10 | vs fixed weights "
          "[95% CI] | weights |\n|---|---|---:|---:|---:|---|---|")  # fmt: skip
    for cf, label, s, v, t, d, lo, hi, w in rows:
        print(f"| {cf} | {label} | {s:.2f} | {v:.4f} | {t:.4f} | {d:+.4f} [{lo:+.4f}, {hi:+.4f}] | {w} |")


def synthetic_candidates(users: int, items: int, full: bool, seed: int = 0) -> BranchScores:
    """Branch scores over candidates of the shapes ``users`` x ``items`` gives, from random vectors."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.integers(0, items, size=(users, CANDIDATES)), axis=1)
    meta = rng.normal(size=(3, users, CANDIDATES)).astype(np.float32) * 0.1
    desc = rng.normal(size=(3, users, CANDIDATES)).astype(np.float32) * 0.1
    cross = rng.uniform(0, 0.5, size=(users, CANDIDATES)).astype(np.float32)
    cf_scores = -np.sort(-rng.normal(size=(users, 200)).astype(np.float32), axis=1)
    cf = BranchOutput(rng.integers(0, items, size=(users, 200)), cf_scores)
    cf_local = moments = None
    if full:
        vec = rng.normal(size=(items, DIM)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        parts = QueryParts(*(rng.normal(size=(3, users, DIM)).astype(np.float32)))
        hist = np.repeat(np.arange(users), 7)
        moments = RetrievalParts(parts, vec, vec[::-1].copy(), hist, rng.integers(0, items, size=len(hist)))
        local = np.sort(rng.choice(CANDIDATES, size=(users, 200)), axis=1)
        rows = rng.normal(size=(users, CANDIDATES)).astype(np.float32)
        cf_local = BranchOutput(local, cf_scores, rows, RowStats.of(rows))
    cands = RetrievalCandidates(items, ids, meta, desc, cross, cf_local, moments)
    targets, hist_len = rng.integers(0, items, users), np.full(users, 7)
    return BranchScores.from_candidates(
        np.arange(users), targets, hist_len, cf, cands, RetrievalWeights(), 200
    )


def cost() -> None:
    from actors.rerank import FusionConfig

    print("\none trial's fusion (fixed alpha, n = 100, top-20) for new retrieval weights, random data of each "
          f"shape, {CANDIDATES} candidates per user\n")  # fmt: skip
    print(
        "| users x items | rows | over every item (s) | over the candidates (s) | ratio |\n|---|---|---:|---:|---:|"
    )
    cfg = FusionConfig(method="fixed", alpha=0.5, n=100)
    w = RetrievalWeights(last=1.0, recent=0.5, llm=0.7, enriched=0.4)
    for users, items, full in ((22_363, 12_101, True), (100_000, 1_000_000, False)):
        b = synthetic_candidates(users, items, full)
        t0 = time.perf_counter()
        fused_lists(b.with_weights(w), cfg, 20)
        cand_s = time.perf_counter() - t0
        every = float("nan")
        if full:  # every item: the part rows' scores, top-N and the fusion over full rows
            m = b.candidates.moments
            del b
            gc.collect()
            t0 = time.perf_counter()
            scores = RetrievalParts(m.parts, m.metadata, m.description, m.mask_rows, m.mask_cols).scores(w)
            ret = BranchOutput.from_rows(scores, 200, "full")
            cf = BranchOutput(ret.ids[:, ::-1].copy(), ret.scores, scores)  # full CF rows of the same size
            fused_lists(
                BranchScores(np.arange(users), np.zeros(users, int), np.full(users, 7), cf, ret), cfg, 20
            )
            every = time.perf_counter() - t0
            del scores, ret, cf
        print(f"| {users:,} x {items:,} | {'full' if full else 'top-N'} | "
              f"{'does not fit' if every != every else f'{every:.1f}'} | {cand_s:.2f} | "
              f"{'' if every != every else f'{every / cand_s:.0f}x'} |")  # fmt: skip
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon-scientific")
    ap.add_argument("--cf", default="ease,sasrec")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--artifacts")
    args = ap.parse_args(argv)
    if not args.cost_only:
        quality(ArtifactPaths.for_dataset(args.dataset, args.artifacts), args.cf.split(","), args.trials)
    cost()
    return 0


if __name__ == "__main__":
    sys.exit(main())
