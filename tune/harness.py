"""Offline evaluation: full ranking of the whole catalog for every evaluable user, in user batches.

A scorer maps (user indices, their input histories) to an (n, n_items) score matrix. The harness masks the
histories, ranks, and computes the metrics of ``tune.metrics``. The input for the test stage is the training
history plus the validation item; for the validation stage, the training history alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from actors.cf.base import score_batch_size
from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus, Stage
from tune.metrics import (
    DEFAULT_KS,
    MetricContext,
    SharedRow,
    by_history_length,
    by_target_popularity,
    compute_metrics,
    concat,
    rank_batch,
)

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


def model_scorer(model) -> Scorer | SharedRow:
    """What ``evaluate_scorer`` ranks for a CF model: its one score row where every user gets the same
    (``CFModel.shared_scores``: popularity), else its scores for each batch of histories."""
    row = model.shared_scores()
    if row is not None:
        return SharedRow(row)
    return lambda users, histories: model.score(histories)


def evaluation_corpus(paths: ArtifactPaths) -> Corpus:
    """The prepared corpus as searches and reports evaluate it: every evaluable user, or the user sample
    the LLM queries were written for (``data_prep.queries --users``), so every row is compared on the
    same users."""
    from data_prep.queries import query_sample

    corpus = Corpus.load(paths)
    sample = query_sample(paths)
    if sample is None:
        return corpus
    log.info("the LLM queries cover a sample of %d users: every row is evaluated on them", len(sample))
    return corpus.evaluated_on(sample)


def metric_context(corpus: Corpus, item_embeddings: np.ndarray | None = None) -> MetricContext:
    n_train_users = sum(1 for s in corpus.train_seqs if len(s))
    return MetricContext(corpus.n_items, corpus.item_popularity(), n_train_users, item_embeddings)


def evaluate_scorer(
    scorer: Scorer | SharedRow,
    corpus: Corpus,
    stage: Stage,
    ctx: MetricContext | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int | None = None,
    with_ranks: bool = False,
    label: str | None = None,
) -> dict[str, Any]:
    """Metrics of ``scorer`` on ``stage`` plus the nested breakdowns ``by_history_length`` and
    ``by_target_popularity`` (``tune.metrics.BREAKDOWNS``); with ``with_ranks``,
    also ``target_ranks``: each user's 1-based target rank (for paired comparisons). With ``label``, a
    progress bar of that name over the user batches. A ``SharedRow`` (one score row for every user) is
    ranked once: the same answers as its row scored for each user, without the rows."""
    ctx = ctx or metric_context(corpus)
    batch_size = batch_size or score_batch_size(corpus.n_items)
    users = corpus.eval_users(stage)
    targets = corpus.target(stage)
    batches = []
    starts = range(0, len(users), batch_size)
    for start in tqdm(starts, desc=label, unit="batch", mininterval=5, disable=label is None):
        u = users[start : start + batch_size]
        hist = corpus.histories(stage, u)
        if isinstance(scorer, SharedRow):
            if len(scorer.row) != corpus.n_items:
                raise ValueError(f"shared score row of {len(scorer.row)} items, expected {corpus.n_items}")
            batches.append(scorer.rank(hist, targets[u], max(ks)))
            continue
        scores = scorer(u, hist)
        if scores.shape != (len(u), corpus.n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(u), corpus.n_items)}")
        batches.append(rank_batch(scores, hist, targets[u], max(ks)))
    ranked = concat(batches)
    out: dict[str, Any] = compute_metrics(ranked, ctx, ks)
    out["by_history_length"] = by_history_length(ranked, k=min(ks))
    out["by_target_popularity"] = by_target_popularity(ranked, ctx, k=min(ks))
    if with_ranks:
        out["target_ranks"] = ranked.ranks
    return out
