"""Ray Tune fusion search against the same number of configs evaluated in a plain loop (the floor).

    python bench/tune_search.py [--artifacts artifacts] [--dataset ml-100k] [--cf sasrec] [--trials 200]
                                # needs `make demo` artifacts (or any prepared dataset with a trained --cf)

Every side fuses and evaluates the real validation branches of ``--cf`` with every retrieval weight whose
input exists (``tune.search.available_weights``), as ``q2rec search`` does. The loop is what the trials cost
without Ray Tune; the Tune rows are ``tune.search.run_search`` one trial at a time (the default,
reproducible) and two at a time, and once with Tune's per-trial CSV, JSON and TensorBoard result files
(``run_search(write_result_files=True)``: what every search wrote before; it reads its results from memory).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus
from tune.branches import evaluate_fused
from tune.branches_store import load_or_compute
from tune.harness import metric_context
from tune.search import METHODS, available_weights, run_search, search_space, to_fusion, to_weights


def random_configs(n: int, tuned: tuple[str, ...], seed: int = 0) -> list[dict]:
    """``n`` configs drawn at random from the search's own space (``tune.search.search_space``)."""
    rng = np.random.default_rng(seed)
    space = search_space(METHODS, tuned)
    return [{k: domain.sample(random_state=rng) for k, domain in space.items()} for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--cf", default="sasrec")
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args(argv)
    paths = ArtifactPaths.for_dataset(args.dataset, args.artifacts)
    corpus = Corpus.load(paths)
    branches = load_or_compute(paths, corpus, "valid", args.cf)
    ctx = metric_context(corpus)
    tuned = available_weights(paths) if branches.tunable else ()

    def ndcg(c: dict) -> float:
        weights = to_weights(c, branches.weights)
        return evaluate_fused(branches, to_fusion(c), ctx, ks=(10,), weights=weights)["NDCG@10"]

    t0 = time.perf_counter()
    best = max(ndcg(c) for c in random_configs(args.trials, tuned))
    loop_s = time.perf_counter() - t0

    rows = []
    for name, concurrency, files in (
        ("Ray Tune + Optuna, 1 at a time, per-trial result files (before)", 1, True),
        ("Ray Tune + Optuna, 1 at a time (now, the default)", 1, False),
        ("Ray Tune + Optuna, 2 at a time", 2, False),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            out = run_search(branches, ctx, Path(tmp), args.trials, concurrency=concurrency, tuned=tuned,
                             write_result_files=files)  # fmt: skip
        rows.append((name, out))
    print(f"{paths.root.name}, {args.cf}, weights searched: {', '.join(tuned) or 'none'}")
    print("| what | trials | seconds | ms/trial | best valid NDCG@10 | vs loop |\n|---|---:|---:|---:|---:|---:|\n"
          f"| plain loop (random configs) | {args.trials} | {loop_s:.1f} | {1000 * loop_s / args.trials:.0f} | "
          f"{best:.4f} | 1.00x |")  # fmt: skip
    for name, out in rows:
        s = out["seconds"]
        print(f"| {name} | {out['trials']} | {s:.1f} | {1000 * s / out['trials']:.0f} | "
              f"{out['valid']['NDCG@10']:.4f} | {s / loop_s:.2f}x |")  # fmt: skip
    before, now = rows[0][1]["seconds"], rows[1][1]["seconds"]
    print(
        f"\nwithout the per-trial result files a search takes {now / before:.2f}x the time ({before / now:.2f}x as fast)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
