"""Ray Tune fusion search: 200 trials against the same 200 configs evaluated in a plain loop.

    python bench/tune_search.py [--dataset ml-100k] [--trials 200]   # needs `make demo` artifacts

Both sides fuse and evaluate the real validation branches (SASRec + LLM query + last-item text, enriched
index). The loop is the floor: what the trials cost without Ray Tune. Goal: 200 trials in under 60 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus
from tune.branches import evaluate_fused
from tune.branches_store import load_or_compute
from tune.harness import metric_context
from tune.search import run_search, to_fusion


def random_configs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"method": rng.choice(["fixed", "adaptive", "rrf"]), "norm": rng.choice(["zscore", "minmax"]),
         "n": rng.choice([20, 50, 100, 200]), "alpha": rng.random(), "a": rng.uniform(-4, 4),
         "b": rng.uniform(-2, 2), "c": rng.uniform(-4, 4), "confidence": rng.choice(["margin", "entropy"]),
         "rrf_k": rng.choice([10.0, 30.0, 60.0])}
        for _ in range(n)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--artifacts")
    args = ap.parse_args(argv)
    paths = ArtifactPaths.for_dataset(args.dataset, args.artifacts)
    corpus = Corpus.load(paths)
    branches = load_or_compute(paths, corpus, "valid", "sasrec", "llm+lastitem", "enriched")
    ctx = metric_context(corpus)

    t0 = time.perf_counter()
    best = max(
        evaluate_fused(branches, to_fusion(c), ctx, ks=(10,))["NDCG@10"] for c in random_configs(args.trials)
    )
    loop_s = time.perf_counter() - t0

    rows = []
    for concurrency in (1, 2):  # 1: reproducible (the default); 2: both cores, order-dependent TPE
        with tempfile.TemporaryDirectory() as tmp:
            out = run_search(branches, ctx, Path(tmp), args.trials, concurrency=concurrency)
        rows.append((f"Ray Tune + Optuna, {concurrency} at a time", out))
    print(f"| what | trials | seconds | ms/trial | best valid NDCG@10 | vs loop |\n|---|---:|---:|---:|---:|---:|\n"
          f"| plain loop (random configs) | {args.trials} | {loop_s:.1f} | {1000 * loop_s / args.trials:.0f} | "
          f"{best:.4f} | 1.00x |")  # fmt: skip
    for name, out in rows:
        s = out["seconds"]
        print(f"| {name} | {out['trials']} | {s:.1f} | {1000 * s / out['trials']:.0f} | "
              f"{out['valid']['NDCG@10']:.4f} | {s / loop_s:.2f}x |")  # fmt: skip
    tune_s = rows[0][1]["seconds"]
    print(
        f"\ngoal < 60 s for {args.trials} trials (default, 1 at a time): {'met' if tune_s < 60 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
