"""Full-ranking metrics for leave-one-out evaluation, vectorised over users.

Every user has one held-out target. Items are ranked by score, ties broken by the lower item index, and
the user's input history is masked before ranking. With one target per user, Recall@K equals HitRate@K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from actors.ranking import (
    ONE_PASS_MIN_ITEMS,
    chunk_maxima,
    mask_items,
    ndcg_at_k,
    ndcg_gains,
    target_ranks,
    topk,
)

DEFAULT_KS = (10, 20)
DEFAULT_LENGTH_BUCKETS = (0, 20, 50, 100, 200)  # lower edges of history-length buckets
HEAD_FRACTION = 0.2
# popularity groups of items: head = the most popular items holding the first GROUP_SHARE of the training
# interactions, tail = the least popular holding the last GROUP_SHARE (every item never seen in training
# among them), mid = the rest
GROUP_SHARE = 0.2
GROUPS = ("head", "mid", "tail")
# the nested per-user-group results an evaluation adds beside its flat metrics
BREAKDOWNS = ("by_history_length", "by_target_popularity")
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class RankedBatch:
    """What the metrics need from one batch of users: their top lists and their target's rank."""

    top: np.ndarray  # (n, max_k)
    ranks: np.ndarray  # (n,)
    targets: np.ndarray  # (n,)
    history_len: np.ndarray  # (n,)


def rank_batch(
    scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray, max_k: int
) -> RankedBatch:
    """Rank one batch of score rows with each row's history masked, and keep only the top ``max_k``.

    The rows are ranked as float32; ``scores`` is only read (the history items rank as -inf, as after
    ``mask_items``). The checks read the maxima that the ranking needs anyway.
    """
    rows = np.asarray(scores, dtype=np.float32)
    maxima = chunk_maxima(rows)
    row_max = maxima.max(axis=1)
    unsure = ~np.isfinite(row_max)  # an infinite or NaN maximum may still sit beside finite values
    if not np.isfinite(np.asarray(scores)[unsure]).any(axis=1).all():
        raise ValueError("a score row has no finite value")
    if np.isnan(row_max).any():
        raise ValueError("scores contain NaN")
    if rows.shape[1] < ONE_PASS_MIN_ITEMS:  # short rows: masking a copy costs less than ranking around it
        masked = mask_items(np.array(scores, dtype=np.float32, copy=True), histories)
        top, ranks = topk(masked, max_k), target_ranks(masked, targets)
    else:
        top = topk(rows, max_k, exclude=histories, maxima=maxima)
        ranks = target_ranks(rows, targets, exclude=histories)
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    return RankedBatch(top, ranks, np.asarray(targets), lens)


class SharedRow:
    """One score row every user shares (popularity), ranked once: each user's top list and target rank come
    from the row's order with the user's history taken out, the same as ``rank_batch`` on that user's copy
    of the row with the history masked (every rank, tie and list equal), without a row per user."""

    def __init__(self, row: np.ndarray) -> None:
        row = np.asarray(row, dtype=np.float32)
        if row.ndim != 1 or not np.isfinite(row).all():
            raise ValueError("a shared score row is one (n_items,) row of finite scores")
        self.row = row
        self.order = np.argsort(-row, kind="stable")  # best first, ties to the lower index
        self.position = np.empty(len(row), dtype=np.int64)
        self.position[self.order] = np.arange(len(row))

    def rank(self, histories: Sequence[np.ndarray], targets: np.ndarray, max_k: int) -> RankedBatch:
        n_items, n = len(self.row), len(histories)
        targets = np.asarray(targets, dtype=np.int64)
        lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
        rows = np.repeat(np.arange(n), lens)
        items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if lens.sum() else rows
        pair = np.unique(rows * n_items + items)  # each (user, item) once
        rows, items = pair // n_items, pair % n_items
        distinct = np.bincount(rows, minlength=n)
        k = min(max_k, n_items)
        # a target in its own history, or fewer unmasked items than k: the masked items would be listed or
        # ranked too; those users are ranked on their own copy of the row
        odd = np.zeros(n, dtype=bool)
        odd[rows[items == targets[rows]]] = True
        odd |= n_items - distinct < k
        # top lists: the first k items of the order that are not in the user's history
        width = min(n_items, k + int(distinct.max(initial=0)))
        at = self.position[items]
        blocked = np.zeros((n, width), dtype=bool)
        near = at < width
        blocked[rows[near], at[near]] = True
        top = self.order[np.argsort(blocked, axis=1, kind="stable")[:, :k]]
        # target ranks: its place in the order, less the history items placed before it
        before = at < self.position[targets][rows]
        ranks = 1 + self.position[targets] - np.bincount(rows[before], minlength=n)
        if odd.any():
            idx = np.flatnonzero(odd)
            alone = rank_batch(np.tile(self.row, (len(idx), 1)), [histories[i] for i in idx], targets[idx], k)
            top[idx], ranks[idx] = alone.top, alone.ranks
        return RankedBatch(top, ranks, targets, lens)


def concat(batches: Sequence[RankedBatch]) -> RankedBatch:
    return RankedBatch(
        *(
            np.concatenate([getattr(b, f) for b in batches])
            for f in ("top", "ranks", "targets", "history_len")
        )
    )


@dataclass
class MetricContext:
    """Catalog-level facts some metrics need: training popularity and optional item embeddings."""

    n_items: int
    item_popularity: np.ndarray  # distinct training users per item
    n_train_users: int
    item_embeddings: np.ndarray | None = None

    def head_items(self) -> np.ndarray:
        n_head = math.ceil(HEAD_FRACTION * self.n_items)
        return np.argsort(-self.item_popularity, kind="stable")[:n_head]

    @cached_property
    def groups(self) -> np.ndarray:
        """(n_items,) index into ``GROUPS`` of each item's popularity group (``popularity_groups``)."""
        return popularity_groups(self.item_popularity)


def popularity_groups(popularity: np.ndarray, share: float = GROUP_SHARE) -> np.ndarray:
    """(n_items,) int8 group of each item by training popularity: 0 head, 1 mid, 2 tail (``GROUPS``).

    Items are ordered from the most popular (ties: lower index first). An item is head while the items more
    popular than it hold less than ``share`` of all interactions, and tail once they hold at least
    ``1 - share`` of them, so the head holds about the first ``share`` of the interactions and the tail the
    last ``share``; an item no training user has seen is always tail.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    order = np.argsort(-pop, kind="stable")
    counts = pop[order]
    total = counts.sum()
    before = (np.cumsum(counts) - counts) / total if total > 0 else np.ones(len(pop))
    group = np.where(before < share, 0, np.where(before >= 1.0 - share, 2, 1))
    group[counts == 0] = 2
    out = np.empty(len(pop), dtype=np.int8)
    out[order] = group
    return out


def accuracy(ranks: np.ndarray, k: int) -> tuple[float, float]:
    """(Recall@k, NDCG@k) for one target per user."""
    return float((ranks <= k).mean()), ndcg_at_k(ranks, k)


def intra_list_distance(top: np.ndarray, embeddings: np.ndarray) -> float:
    """Mean pairwise (1 - cosine) between the items of each list, averaged over lists."""
    emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    k = top.shape[1]
    if k < 2:
        return 0.0
    vecs = emb[top]  # (n, k, d)
    gram = np.einsum("nkd,njd->nkj", vecs, vecs)
    off_diag = (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (k * (k - 1))
    return float((1.0 - off_diag).mean())


def compute_metrics(
    ranked: RankedBatch, ctx: MetricContext, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall, HitRate, NDCG, Coverage, Novelty, ILD (with embeddings), TailRecall, ARP (the mean training
    popularity, in distinct users, of the recommended items) and TailShare (the share of recommended items in
    the tail popularity group) at each K, plus MRR."""
    out: dict[str, float] = {}
    info = -np.log2(np.maximum(ctx.item_popularity, 1) / max(ctx.n_train_users, 1))
    tail_users = ~np.isin(ranked.targets, ctx.head_items())
    for k in ks:
        top = ranked.top[:, :k]
        recall, ndcg = accuracy(ranked.ranks, k)
        out[f"Recall@{k}"] = recall
        out[f"HitRate@{k}"] = recall
        out[f"NDCG@{k}"] = ndcg
        out[f"Coverage@{k}"] = len(np.unique(top)) / ctx.n_items
        out[f"Novelty@{k}"] = float(info[top].mean())
        out[f"ARP@{k}"] = float(ctx.item_popularity[top].mean())
        out[f"TailShare@{k}"] = float((ctx.groups[top] == GROUPS.index("tail")).mean())
        out[f"TailRecall@{k}"] = (
            float((ranked.ranks[tail_users] <= k).mean()) if tail_users.any() else float("nan")
        )
        if ctx.item_embeddings is not None:
            out[f"ILD@{k}"] = intra_list_distance(top, ctx.item_embeddings)
    out["MRR"] = float((1.0 / ranked.ranks).mean())
    out["users"] = len(ranked.ranks)
    return out


def by_history_length(
    ranked: RankedBatch, k: int = 10, edges: Sequence[int] = DEFAULT_LENGTH_BUCKETS
) -> dict[str, dict[str, float]]:
    """Recall@k and NDCG@k per history-length bucket (``"20-49"``, ``"200+"``), with user counts."""
    out: dict[str, dict[str, float]] = {}
    bounds = [*edges, np.inf]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (ranked.history_len >= lo) & (ranked.history_len < hi)
        if not sel.any():
            continue
        label = f"{lo}+" if hi == np.inf else f"{lo}-{int(hi) - 1}"
        recall, ndcg = accuracy(ranked.ranks[sel], k)
        out[label] = {"users": int(sel.sum()), f"Recall@{k}": recall, f"NDCG@{k}": ndcg}
    return out


def by_target_popularity(ranked: RankedBatch, ctx: MetricContext, k: int = 10) -> dict[str, dict[str, float]]:
    """Recall@k and NDCG@k of the users whose target is in each popularity group (``head``, ``mid``,
    ``tail``), and of those whose target no training user has seen (``cold``) or has (``warm``), with user
    counts; an empty group is left out."""
    group = ctx.groups[ranked.targets]
    seen = ctx.item_popularity[ranked.targets] > 0
    sets = {name: group == i for i, name in enumerate(GROUPS)} | {"cold": ~seen, "warm": seen}
    out: dict[str, dict[str, float]] = {}
    for name, sel in sets.items():
        if sel.any():
            recall, ndcg = accuracy(ranked.ranks[sel], k)
            out[name] = {"users": int(sel.sum()), f"Recall@{k}": recall, f"NDCG@{k}": ndcg}
    return out


def gains(ranks: np.ndarray, k: int = 10, metric: str = "NDCG") -> np.ndarray:
    """Per-user NDCG@k or Recall@k (``metric``) for one target per user, from 1-based ranks."""
    if metric == "NDCG":
        return ndcg_gains(ranks, k)
    if metric == "Recall":
        return (np.asarray(ranks) <= k).astype(np.float64)
    raise ValueError(f"metric must be 'NDCG' or 'Recall', got {metric!r}")


def paired_bootstrap(
    ranks_a: np.ndarray,
    ranks_b: np.ndarray,
    k: int = 10,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    metric: str = "NDCG",
) -> dict[str, float]:
    """NDCG@k (or Recall@k, ``metric``) of A minus B on the same users, with a 95% paired bootstrap interval
    (users resampled) and the bootstrap standard error of the difference (``se``).

    An interval that contains 0 means the two cannot be told apart on this test set.
    """
    if ranks_a.shape != ranks_b.shape:
        raise ValueError(f"paired ranks differ in shape: {ranks_a.shape} vs {ranks_b.shape}")
    diff = gains(ranks_a, k, metric) - gains(ranks_b, k, metric)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "ci95_low": float(lo), "ci95_high": float(hi), "se": float(means.std()),
            "users": len(diff)}  # fmt: skip
