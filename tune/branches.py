"""Branch scores computed once per stage, so fusion trials only fuse and evaluate.

For each evaluable user: the CF branch's and the retrieval branch's ``BranchOutput`` (top-N over the whole
catalog, history excluded, with the full score rows), the target and the history length. ``evaluate_fused`` ranks the fused
list and computes the usual metrics; ranks beyond the fused list count as misses (MRR is MRR@list).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from actors.branch import BranchOutput, RowMode
from actors.cf import CFModel
from actors.rerank import FusionConfig, fuse
from actors.retriever import LastItemRetriever, Retriever
from data_prep.corpus import Corpus, Stage
from tune.metrics import DEFAULT_KS, MetricContext, RankedBatch, compute_metrics


@dataclass
class BranchScores:
    """Both branches' answers for every evaluable user of one stage, with their targets."""

    users: np.ndarray
    targets: np.ndarray
    history_len: np.ndarray
    cf: BranchOutput
    retrieval: BranchOutput

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, users=self.users, targets=self.targets, history_len=self.history_len,
                 **self.cf.arrays("cf"), **self.retrieval.arrays("retrieval"))  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> BranchScores:
        with np.load(path) as z:
            return cls(z["users"], z["targets"], z["history_len"], BranchOutput.from_arrays(z, "cf"),
                       BranchOutput.from_arrays(z, "retrieval"))  # fmt: skip

    def with_rows(self, mode: RowMode) -> BranchScores:
        """The same lists with both branches in row mode ``mode`` (full rows → their statistics → none)."""
        return replace(self, cf=self.cf.with_rows(mode), retrieval=self.retrieval.with_rows(mode))


def cf_topn(model: CFModel, corpus: Corpus, stage: Stage, n: int, rows: RowMode = "full") -> BranchOutput:
    users = corpus.eval_users(stage)
    return model.rank(corpus.histories(stage, users), n, rows=rows)


def lastitem_topn(
    retriever: Retriever, corpus: Corpus, stage: Stage, n: int, rows: RowMode = "full"
) -> BranchOutput:
    """Cosine search with the last history item's vector as the query (the query-free baseline)."""
    users = corpus.eval_users(stage)
    return LastItemRetriever(retriever).recommend(corpus.histories(stage, users), n, rows)


def query_topn(
    branch, corpus: Corpus, stage: Stage, queries: pd.DataFrame, n: int, rows: RowMode = "full"
) -> BranchOutput:
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
    return branch.search(texts, hist, n, rows=rows)


def assemble(corpus: Corpus, stage: Stage, cf: BranchOutput, retrieval: BranchOutput) -> BranchScores:
    users = corpus.eval_users(stage)
    hist_len = np.array([len(h) for h in corpus.histories(stage, users)])
    return BranchScores(users, corpus.target(stage)[users], hist_len, cf, retrieval)


def evaluate_fused(b: BranchScores, cfg: FusionConfig, ctx: MetricContext, ks=DEFAULT_KS) -> dict[str, float]:
    """Fuse every user's branches and compute metrics; a target outside the fused list is a miss."""
    fused = fuse(b.cf, b.retrieval, b.history_len, cfg, max(ks))
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
