"""Branch scores computed once per stage, so fusion trials only fuse and evaluate.

For each evaluable user: the CF branch's ``BranchOutput`` (top-N over the whole catalog, history excluded)
and the retrieval branch's, for the retrieval weights the scores were computed with, plus the target and
the history length. Where the catalog is small enough for full score rows, the retrieval side also keeps
``RetrievalParts`` (each user's query parts and the item vectors), so a trial gets the retrieval branch's
exact answer for *any* weights (``BranchScores.with_weights``) and the weights are searched with the rest
of the fusion. ``evaluate_fused`` ranks the fused list and computes the usual metrics; ranks
beyond the fused list count as misses (MRR is MRR@list).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from actors.branch import BranchOutput, RowMode, RowStats
from actors.rerank import FusionConfig, fuse
from actors.retrieval_query import RetrievalWeights
from tune.candidates import RetrievalCandidates
from tune.metrics import DEFAULT_KS, MetricContext, RankedBatch, compute_metrics
from tune.retrieval_parts import RetrievalParts


@dataclass
class BranchScores:
    """Both branches' answers for every evaluable user of one stage, with their targets. ``retrieval`` is the
    answer for ``weights``; with ``rows`` the retrieval answer for any other weights is exact too."""

    users: np.ndarray
    targets: np.ndarray
    history_len: np.ndarray
    cf: BranchOutput
    retrieval: BranchOutput
    weights: RetrievalWeights = RetrievalWeights()
    parts: RetrievalParts | None = None
    candidates: RetrievalCandidates | None = None  # above the trial budget (``tune.candidates``)
    local: BranchOutput | None = None  # the retrieval answer in candidate coordinates (full-row catalogs)
    unseen: np.ndarray | None = None  # (n_items,) bool: the items CF never saw in training

    def __post_init__(self) -> None:
        # CF's answer is the same for every fusion config and retrieval weights: the statistics of its full
        # rows are computed here once, not in every trial of a search
        if self.cf.full is not None and self.cf.stats is None:
            self.cf = replace(self.cf, stats=RowStats.of(self.cf.full))

    @classmethod
    def from_candidates(cls, users: np.ndarray, targets: np.ndarray, history_len: np.ndarray, cf: BranchOutput,
                        candidates: RetrievalCandidates, weights: RetrievalWeights, n: int,
                        unseen: np.ndarray | None = None) -> BranchScores:  # fmt: skip
        """Branch scores whose retrieval answer for any weights comes from ``candidates``."""
        answer, local = candidates.output(weights, n)
        return cls(users, targets, history_len, cf, answer, weights, None, candidates, local, unseen)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = self.parts.arrays() if self.parts is not None else {}
        if self.candidates is not None:
            extra |= self.candidates.arrays() | (
                self.candidates.moments.arrays() if self.candidates.moments else {}
            )
        if self.unseen is not None:
            extra["unseen"] = self.unseen
        weights = np.array([getattr(self.weights, k) for k in asdict(self.weights)], dtype=np.float64)
        np.savez(path, users=self.users, targets=self.targets, history_len=self.history_len, weights=weights,
                 **self.cf.arrays("cf"), **self.retrieval.arrays("retrieval"), **extra)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> BranchScores:
        with np.load(path) as z:
            weights = RetrievalWeights(
                **dict(zip(asdict(RetrievalWeights()), z["weights"].tolist(), strict=True))
            )
            args = (z["users"], z["targets"], z["history_len"], BranchOutput.from_arrays(z, "cf"))
            unseen = np.asarray(z["unseen"]) if "unseen" in z else None
            parts = RetrievalParts.from_arrays(z)  # the statistics' inputs, where candidates were kept
            candidates = RetrievalCandidates.from_arrays(z, parts)
            if candidates is not None:
                return cls.from_candidates(*args, candidates, weights, len(z["retrieval_ids"][0]), unseen)
            return cls(*args, BranchOutput.from_arrays(z, "retrieval"), weights, parts, unseen=unseen)

    @property
    def tunable(self) -> bool:
        """Whether the retrieval answer for other weights can be computed, or only ``weights``'s is held."""
        return self.parts is not None or self.candidates is not None

    def with_weights(self, weights: RetrievalWeights) -> BranchScores:
        """The same users with the retrieval branch's answer for ``weights`` (its list as long as now)."""
        if weights == self.weights:
            return self
        if self.candidates is not None:
            answer, local = self.candidates.output(weights, self.retrieval.n)
            return replace(self, retrieval=answer, local=local, weights=weights)
        if self.parts is None:
            raise ValueError(
                f"these branch scores hold the retrieval answer for {self.weights} only (neither part rows nor "
                f"candidates were kept); {weights} needs its own computation"
            )
        return replace(self, retrieval=self.parts.output(weights, self.retrieval.n), weights=weights)

    def with_rows(self, mode: RowMode) -> BranchScores:
        """The same lists with both branches in row mode ``mode`` (full rows → their statistics → none)."""
        return replace(self, cf=self.cf.with_rows(mode), retrieval=self.retrieval.with_rows(mode))


FUSE_USERS = 8192  # users fused at once: the fusion's working arrays stay bounded, whatever the user count


def fused_lists(b: BranchScores, cfg: FusionConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n_users, k), alpha (n_users,)) of every user's fused top-``k``, ``FUSE_USERS`` users at a time
    (a user's list depends on that user's branches only); in candidate coordinates where the branch scores
    hold them (``tune.candidates``), mapped back to item ids."""
    local = b.local is not None
    cf, retrieval = (b.candidates.cf_local, b.local) if local else (b.cf, b.retrieval)
    ids, alpha = [], []
    for start in range(0, len(b.users), FUSE_USERS):
        rows = slice(start, start + FUSE_USERS)
        unseen = b.unseen
        if local and unseen is not None:  # per user, over the candidates (the padding is never listed)
            unseen = unseen[np.minimum(b.candidates.ids[rows], len(unseen) - 1)]
        f = fuse(cf.take(rows), retrieval.take(rows), b.history_len[rows], cfg, k, unseen)
        ids.append(np.take_along_axis(b.candidates.ids[rows], f.ids, axis=1) if local else f.ids)
        alpha.append(f.alpha)
    width = min(x.shape[1] for x in ids)  # a chunk whose users have shorter lists fuses fewer
    return np.concatenate([x[:, :width] for x in ids]), np.concatenate(alpha)


def evaluate_fused(
    b: BranchScores,
    cfg: FusionConfig,
    ctx: MetricContext,
    ks=DEFAULT_KS,
    weights: RetrievalWeights | None = None,
) -> dict[str, float]:
    """Fuse every user's branches (the retrieval side with ``weights``, default the computed ones) and compute
    metrics; a target outside the fused list is a miss."""
    b = b.with_weights(weights) if weights is not None else b
    ids, _ = fused_lists(b, cfg, max(ks))
    return evaluate_lists(ids, b.targets, b.history_len, ctx, ks)


def ranked_lists(top: np.ndarray, targets: np.ndarray, history_len: np.ndarray, n_items: int) -> RankedBatch:
    """A RankedBatch from top lists; a target outside its list gets rank ``n_items + 1`` (a miss)."""
    hit = top == targets[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, n_items + 1)
    return RankedBatch(top, ranks, targets, history_len)


def evaluate_lists(
    top: np.ndarray, targets: np.ndarray, history_len: np.ndarray, ctx: MetricContext, ks=DEFAULT_KS
):
    return compute_metrics(ranked_lists(top, targets, history_len, ctx.n_items), ctx, ks)
