"""Branch scores computed once per stage, so fusion trials only fuse and evaluate.

For each evaluable user: the CF branch's top-N (history masked) and the retrieval branch's top-N over the
whole catalog (history excluded), with the target and history length. ``evaluate_fused`` ranks the fused
list and computes the usual metrics; ranks beyond the fused list count as misses (MRR is MRR@list).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from actors.cf import CFModel
from actors.ranking import mask_items, top_scores
from actors.rerank import FusionConfig, fuse
from data_prep.corpus import Corpus, Stage
from tune.metrics import DEFAULT_KS, MetricContext, RankedBatch, compute_metrics

QueryMode = Literal["llm", "llm+lastitem", "lastitem"]


@dataclass
class BranchScores:
    users: np.ndarray
    targets: np.ndarray
    history_len: np.ndarray
    cf_ids: np.ndarray
    cf_scores: np.ndarray
    ret_ids: np.ndarray
    ret_scores: np.ndarray
    cf_full: np.ndarray | None = None  # (n_users, n_items) float32, -inf on the masked history
    ret_full: np.ndarray | None = None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        )

    @classmethod
    def load(cls, path: Path) -> BranchScores:
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls) if f.name in z.files})


def top_of(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, scores) of the top ``n`` of masked full score rows, plus the rows themselves (float32)."""
    return *top_scores(scores, n), scores.astype(np.float32)


def cf_topn(model: CFModel, corpus: Corpus, stage: Stage, n: int):
    users = corpus.eval_users(stage)
    hist = corpus.histories(stage, users)
    return top_of(mask_items(model.score(hist), hist), n)


def lastitem_topn(item_vectors: np.ndarray, corpus: Corpus, stage: Stage, n: int):
    """Exact cosine search with the last history item's vector as the query (the query-free baseline)."""
    from tune.content import LastItemScorer

    users = corpus.eval_users(stage)
    hist = corpus.histories(stage, users)
    return top_of(mask_items(LastItemScorer(item_vectors)(users, hist), hist), n)


def query_topn(branch, corpus: Corpus, stage: Stage, queries: pd.DataFrame, n: int):
    """The LLM-query retrieval branch; ``queries`` is ``user_queries.parquet`` (one row per user and stage)."""
    users = corpus.eval_users(stage)
    hist = corpus.histories(stage, users)
    by_user = queries[queries["stage"] == stage].set_index("user_id")["query"]
    missing = [u for u in corpus.user_ids[users] if u not in by_user.index]
    if missing:
        raise ValueError(
            f"{len(missing)} {stage} users have no query (e.g. {missing[:3]}); run data_prep.queries"
        )
    texts = by_user.loc[corpus.user_ids[users]].tolist()
    return top_of(branch.score_all(texts, hist), n)


def assemble(corpus: Corpus, stage: Stage, cf, ret) -> BranchScores:
    users = corpus.eval_users(stage)
    hist_len = np.array([len(h) for h in corpus.histories(stage, users)])
    return BranchScores(users, corpus.target(stage)[users], hist_len, *cf[:2], *ret[:2], cf[2], ret[2])


def evaluate_fused(b: BranchScores, cfg: FusionConfig, ctx: MetricContext, ks=DEFAULT_KS) -> dict[str, float]:
    """Fuse every user's branches and compute metrics; a target outside the fused list is a miss."""
    fused = fuse(
        b.cf_ids, b.cf_scores, b.ret_ids, b.ret_scores, b.history_len, cfg, max(ks), b.cf_full, b.ret_full
    )
    return evaluate_lists(fused.ids, b.targets, b.history_len, ctx, ks)


def ranked_lists(top: np.ndarray, targets: np.ndarray, history_len: np.ndarray, n_items: int) -> RankedBatch:
    """A RankedBatch from top lists; a target outside its list gets rank ``n_items + 1`` (a miss)."""
    hit = top == targets[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, n_items + 1)
    return RankedBatch(top, ranks, targets, history_len)


def evaluate_lists(
    top: np.ndarray, targets: np.ndarray, history_len: np.ndarray, ctx: MetricContext, ks=DEFAULT_KS
):
    return compute_metrics(ranked_lists(top, targets, history_len, ctx.n_items), ctx, ks)
