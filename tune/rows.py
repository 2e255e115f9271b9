"""The evaluation of one report row: CF alone, last-item retrieval, a query branch, or a tuned fusion.

Each row has ``valid`` and ``test`` metrics, the test breakdowns (``by_history_length`` buckets,
``by_target_popularity`` groups), and the per-user test ranks (``test_ranks``, for paired comparisons; the
report takes them out before writing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.rerank import FusionConfig
from actors.retrieval_query import RetrievalWeights
from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus
from tune.branches import BranchScores, fused_lists, ranked_lists
from tune.experiments import DEFAULT_MODELS
from tune.harness import evaluate_scorer, model_scorer
from tune.metrics import (
    BREAKDOWNS,
    DEFAULT_KS,
    MetricContext,
    by_history_length,
    by_target_popularity,
    compute_metrics,
)

Overrides = dict[str, dict[str, Any]]


def row_result(valid: dict[str, Any], test: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Split off the breakdowns (``tune.metrics.BREAKDOWNS``) and the per-user ``target_ranks`` (all kept for
    test only) from two metric dicts. ``test_ranks`` is for paired comparisons and is taken out before the
    report is written."""
    split_off = (*BREAKDOWNS, "target_ranks")
    row = {
        "valid": {k: v for k, v in valid.items() if k not in split_off},
        "test": {k: v for k, v in test.items() if k not in split_off},
        **{k: test.get(k, {}) for k in BREAKDOWNS},
        "test_ranks": test.get("target_ranks"),
    }
    return row | extra


def list_metrics(top: np.ndarray, b: BranchScores, ctx: MetricContext) -> dict[str, Any]:
    return lists_metrics(top, b.targets, b.history_len, ctx)


def lists_metrics(
    top: np.ndarray, targets: np.ndarray, history_len: np.ndarray, ctx: MetricContext
) -> dict[str, Any]:
    """The metrics, breakdowns and target ranks of top lists (a target outside its list is a miss)."""
    ranked = ranked_lists(top, targets, history_len, ctx.n_items)
    return compute_metrics(ranked, ctx, DEFAULT_KS) | {
        "by_history_length": by_history_length(ranked),
        "by_target_popularity": by_target_popularity(ranked, ctx),
        "target_ranks": ranked.ranks,
    }


def fused_metrics(
    b: BranchScores, cfg: FusionConfig, ctx: MetricContext, weights: RetrievalWeights | None = None
) -> dict[str, Any]:
    b = b.with_weights(weights) if weights is not None else b
    ids, alpha = fused_lists(b, cfg, max(DEFAULT_KS))
    return list_metrics(ids, b, ctx) | {"mean_alpha": float(alpha.mean())}


def cf_rows(paths: ArtifactPaths, corpus: Corpus, ctx: MetricContext, overrides: Overrides,
            models: tuple[str, ...] = DEFAULT_MODELS) -> dict[str, Any]:  # fmt: skip
    """The rows of the CF ``models`` alone (trained by ``q2rec train``)."""
    from training.cf import load_trained

    rows = {}
    for name in models:
        scorer = model_scorer(load_trained(paths, name, overrides.get(name)))
        rows[name] = row_result(
            *(evaluate_scorer(scorer, corpus, s, ctx, with_ranks=True) for s in ("valid", "test"))
        )
    return rows


def lastitem_row(corpus: Corpus, ctx: MetricContext, vectors: np.ndarray) -> dict[str, Any]:
    from tune.content import lastitem_scorer

    scorer = lastitem_scorer(vectors)
    return row_result(*(evaluate_scorer(scorer, corpus, s, ctx, with_ranks=True) for s in ("valid", "test")))


def branch_pair(paths, corpus, cf: str, overrides: Overrides, weights: RetrievalWeights | None = None):
    """(valid, test) BranchScores of one CF backbone, the retrieval side for ``weights``."""
    from tune.branches_store import load_or_compute

    return tuple(load_or_compute(paths, corpus, s, cf, weights, cf_overrides=overrides.get(cf))
                 for s in ("valid", "test"))  # fmt: skip
