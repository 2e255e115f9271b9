"""What fusion loses without catalog-wide score rows: full rows vs their statistics vs top-N lists only.

    python bench/fusion_modes.py [--dataset ml-100k] [--weights last=1,llm=1] [--trials 100]

For each CF backbone (EASE, SASRec) the branches of the validation and test users are computed once with
full rows (``tune.branches_store``), then cut down to each row mode (``BranchOutput.with_rows``). Each mode
gets its own fusion search on validation (Ray Tune, the methods fixed and adaptive) and is applied unchanged
to test. The table gives test NDCG@10 per mode, the difference from full rows with its 95% paired bootstrap
interval over the test users, and the bytes a branch ships per user in that mode (the serving cost).
Needs the trained models and the index: ``q2rec train`` and ``q2rec index``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from actors.branch import ROW_MODES
from actors.fusion_file import TunedFusion
from actors.ranking import ndcg_at_k
from actors.rerank import FusionConfig, fuse
from actors.retrieval_query import RetrievalWeights
from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus
from tune.branches import BranchScores, ranked_lists
from tune.branches_store import load_or_compute
from tune.harness import metric_context
from tune.metrics import paired_bootstrap
from tune.search import run_search


def fused_ranks(b: BranchScores, cfg: FusionConfig, n_items: int) -> np.ndarray:
    """Each user's 1-based target rank in the fused top-20 (a miss ranks past the catalog)."""
    fused = fuse(b.cf, b.retrieval, b.history_len, cfg, 20, b.unseen)
    return ranked_lists(fused.ids, b.targets, b.history_len, n_items).ranks


def shipped_bytes(b: BranchScores) -> int:
    """Bytes a branch sends per user: its ids (int64) and scores (float32), plus the full float32 row or
    the row's four float64 statistics."""
    row = b.cf.full.shape[1] * 4 if b.cf.full is not None else 32 if b.cf.stats is not None else 0
    return b.cf.n * 12 + row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--artifacts")
    ap.add_argument("--weights", default="last=1",
                    help="the retrieval weights (actors.retrieval_query), e.g. last=1,llm=1,enriched=0.5")  # fmt: skip
    ap.add_argument("--trials", type=int, default=100, help="Tune trials per (backbone, mode)")
    args = ap.parse_args(argv)
    paths = ArtifactPaths.for_dataset(args.dataset, args.artifacts)
    try:
        weights = RetrievalWeights.from_dict(
            {"last": 0.0}
            | {k.strip(): float(v) for k, v in (kv.split("=") for kv in args.weights.split(","))}
        )
    except ValueError as exc:
        print(f"error: --weights {args.weights!r}: {exc}", file=sys.stderr)
        return 2
    corpus = Corpus.load(paths)
    ctx = metric_context(corpus)
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for cf in ("ease", "sasrec"):
            try:
                valid, test = (load_or_compute(paths, corpus, s, cf, weights) for s in ("valid", "test"))
            except FileNotFoundError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if valid.cf.mode != "full":
                print(f"error: {paths.root.name} has {corpus.n_items:,} items: its branch cache keeps no full "
                      "rows to cut down, so the modes cannot be compared here", file=sys.stderr)  # fmt: skip
                return 2
            ranks = {}
            for mode in ROW_MODES:
                search = run_search(valid.with_rows(mode), ctx, Path(storage), args.trials,
                                    methods=("fixed", "adaptive"), name=f"{cf}-{mode}")  # fmt: skip
                cfg = TunedFusion.of(search, f"{cf}-{mode} search").config
                ranks[mode] = fused_ranks(test.with_rows(mode), cfg, corpus.n_items)
                pb = paired_bootstrap(ranks[mode], ranks["full"])
                ndcg = ndcg_at_k(ranks[mode], 10)
                rows.append((cf, mode, search["valid"]["NDCG@10"], ndcg, pb, shipped_bytes(test.with_rows(mode)),
                             cfg.method))  # fmt: skip
    print(f"\n{args.dataset}: CF + retrieval with weights {weights}, each mode tuned on valid "
          f"({args.trials} trials, fixed or adaptive α), test NDCG@10 over the fused top-20 of each branch's top-200\n")  # fmt: skip
    print(
        "| backbone | row mode | method | valid NDCG@10 | test NDCG@10 | vs full (95% paired CI) | bytes/user/branch |"
    )
    print("|---|---|---|---:|---:|---|---:|")
    for cf, mode, v, t, pb, nbytes, method in rows:
        ci = f"{pb['diff']:+.4f} [{pb['ci95_low']:+.4f}, {pb['ci95_high']:+.4f}]"
        print(f"| {cf} | {mode} | {method} | {v:.4f} | {t:.4f} | {ci} | {nbytes:,} |")
    summary = "; ".join(f"{cf} {mode} {t:.4f}" for cf, mode, _, t, _, _, _ in rows)
    print(f"\nsummary: test NDCG@10 {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
