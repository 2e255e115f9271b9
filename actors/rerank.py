"""Adaptive fusion of the CF branch and the retrieval branch: a pure, vectorised, deterministic function.

Both branches hand over their top-N (ids, scores) per user. Fusion works on the union of the two lists:
scores are normalised per branch (z-score or min-max over that branch's top-N), an item missing from a
branch scores just below that branch's lowest listed item, and the fused score is α·cf + (1−α)·retrieval. α is
fixed, or per user: α_u = sigmoid(a + b·(log(1+|h_u|) − log 51) + c·(conf_u − ½)), where conf_u is the CF branch's
confidence (top-1 margin of the softmax over its top-N scores, or 1 − normalised entropy). Reciprocal-
rank fusion (weights α and 1−α) is the rank-only alternative. Every output item carries its provenance:
its rank (1-based; 0 = absent) and raw score in each branch.

When a branch can also hand over its score for *every* catalog item (``cf_full`` / ``ret_full``: CF scores
every item anyway, and retrieval on a flat index is one product with the item vectors), normalisation
uses that whole row and an item missing from the branch's top-N gets its true score instead of the floor.
On ML-100K, EASE fused with metadata last-item content gains +25% to +34% over EASE alone this way, against
+16% with list-only statistics (test NDCG@10): z-scores over a top-N list distort the branches' scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from actors.ranking import topk

# adaptive α: history length and confidence enter centred, so ``a`` alone sets a typical user's α
LOG_LEN_CENTRE = float(np.log1p(50))


@dataclass
class FusionConfig:
    method: Literal["fixed", "adaptive", "rrf"] = "adaptive"
    norm: Literal["zscore", "minmax"] = "zscore"
    n: int = 100  # items taken from each branch
    alpha: float = 0.5  # fixed / rrf: weight of the CF branch
    a: float = 0.0  # adaptive: alpha_u = sigmoid(a + b*(log(1+|h|) - log(51)) + c*(conf - 0.5))
    b: float = 0.0
    c: float = 0.0
    confidence: Literal["margin", "entropy"] = "margin"
    rrf_k: float = 60.0


@dataclass
class Fused:
    """(n_users, k) arrays, best first; ranks are 1-based within each branch's top-N, 0 when absent."""

    ids: np.ndarray
    scores: np.ndarray
    cf_rank: np.ndarray
    cf_score: np.ndarray
    retrieval_rank: np.ndarray
    retrieval_score: np.ndarray
    alpha: np.ndarray  # (n_users,)


def normalise(scores: np.ndarray, how: str, reference: np.ndarray | None = None) -> np.ndarray:
    """Per-row z-score or min-max, with statistics over the finite entries of ``reference`` (default: the
    scores themselves; e.g. a full catalog row whose masked entries are -inf)."""
    s = np.asarray(scores, dtype=np.float64)
    ref = s if reference is None else np.asarray(reference, dtype=np.float64)
    finite = np.isfinite(ref)
    if how == "zscore":
        cnt = np.maximum(finite.sum(axis=1, keepdims=True), 1)
        mu = np.where(finite, ref, 0.0).sum(axis=1, keepdims=True) / cnt
        sd = np.sqrt((np.where(finite, ref - mu, 0.0) ** 2).sum(axis=1, keepdims=True) / cnt)
        return (s - mu) / np.where(sd > 0, sd, 1.0)
    if how == "minmax":
        lo = np.where(finite, ref, np.inf).min(axis=1, keepdims=True)
        hi = np.where(finite, ref, -np.inf).max(axis=1, keepdims=True)
        return (s - lo) / np.where(hi > lo, hi - lo, 1.0)
    raise ValueError(f"norm must be 'zscore' or 'minmax', got {how!r}")


def cf_confidence(cf_scores: np.ndarray, kind: str) -> np.ndarray:
    """Confidence in [0, 1] of each CF list from the softmax over its top-N scores."""
    s = np.asarray(cf_scores, dtype=np.float64)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if kind == "margin":
        top2 = -np.sort(-p, axis=1)[:, :2]
        return top2[:, 0] - (top2[:, 1] if p.shape[1] > 1 else 0.0)
    if kind == "entropy":
        if p.shape[1] < 2:
            return np.ones(len(p))
        ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
        return 1.0 - ent / np.log(p.shape[1])
    raise ValueError(f"confidence must be 'margin' or 'entropy', got {kind!r}")


def user_alpha(cfg: FusionConfig, history_len: np.ndarray, cf_scores: np.ndarray) -> np.ndarray:
    n = len(history_len)
    if cfg.method != "adaptive":
        return np.full(n, cfg.alpha)
    conf = cf_confidence(cf_scores, cfg.confidence)
    centred_len = np.log1p(np.asarray(history_len, dtype=np.float64)) - LOG_LEN_CENTRE
    z = cfg.a + cfg.b * centred_len + cfg.c * (conf - 0.5)
    return 1.0 / (1.0 + np.exp(-z))


def fuse(
    cf_ids: np.ndarray,
    cf_scores: np.ndarray,
    ret_ids: np.ndarray,
    ret_scores: np.ndarray,
    history_len: np.ndarray,
    cfg: FusionConfig,
    k: int,
    cf_full: np.ndarray | None = None,
    ret_full: np.ndarray | None = None,
) -> Fused:
    """Fuse the two branches' top lists (each (n_users, ≥1), best first) into the top-k of their union.

    ``cf_full`` / ``ret_full`` (optional, (n_users, n_items), -inf where masked) are the branches' scores
    of every item: they set the normalisation statistics and fill in items missing from a branch's list.
    """
    n_users = len(cf_ids)
    if not (len(cf_scores) == len(ret_ids) == len(ret_scores) == len(history_len) == n_users):
        raise ValueError("both branches and history_len need one row per user")
    cf_ids, cf_scores = cf_ids[:, : cfg.n], cf_scores[:, : cfg.n]
    ret_ids, ret_scores = ret_ids[:, : cfg.n], ret_scores[:, : cfg.n]
    n_cf, n_ret = cf_ids.shape[1], ret_ids.shape[1]
    alpha = user_alpha(cfg, history_len, cf_scores)

    if cfg.method == "rrf":
        cf_val = 1.0 / (cfg.rrf_k + np.arange(1, n_cf + 1))[None].repeat(n_users, 0)
        ret_val = 1.0 / (cfg.rrf_k + np.arange(1, n_ret + 1))[None].repeat(n_users, 0)
        cf_floor = np.zeros((n_users, 1))
        ret_floor = np.zeros((n_users, 1))
    else:
        cf_val, ret_val = normalise(cf_scores, cfg.norm, cf_full), normalise(ret_scores, cfg.norm, ret_full)
        # a missing item sits just below the branch's lowest listed item, unless its true score is known
        cf_floor = cf_val.min(axis=1, keepdims=True) - 1e-6
        ret_floor = ret_val.min(axis=1, keepdims=True) - 1e-6

    # one row per user holding both lists; NaN marks "not in this branch"
    ids = np.concatenate([cf_ids, ret_ids], axis=1)
    nan_cf, nan_ret = np.full((n_users, n_ret), np.nan), np.full((n_users, n_cf), np.nan)
    cfv = np.concatenate([cf_val, nan_cf], axis=1)
    rv = np.concatenate([nan_ret, ret_val], axis=1)
    cfr = np.concatenate(
        [np.arange(1, n_cf + 1)[None].repeat(n_users, 0), np.zeros((n_users, n_ret))], axis=1
    )
    rr = np.concatenate([np.zeros((n_users, n_cf)), np.arange(1, n_ret + 1)[None].repeat(n_users, 0)], axis=1)
    cfs = np.concatenate([cf_scores, nan_cf], axis=1)
    rs = np.concatenate([nan_ret, ret_scores], axis=1)

    order = np.argsort(ids, axis=1, kind="stable")
    cols = [np.take_along_axis(a, order, axis=1) for a in (ids, cfv, rv, cfr, rr, cfs, rs)]
    sid, cfv, rv, cfr, rr, cfs, rs = cols
    dup = sid[:, 1:] == sid[:, :-1]  # an item in both lists: fold the second copy into the first
    for arr in (cfv, rv, cfs, rs):
        arr[:, :-1] = np.where(dup, np.fmax(arr[:, :-1], arr[:, 1:]), arr[:, :-1])
    for arr in (cfr, rr):
        arr[:, :-1] = np.where(dup, np.maximum(arr[:, :-1], arr[:, 1:]), arr[:, :-1])
    second = np.zeros_like(sid, dtype=bool)
    second[:, 1:] = dup

    if cfg.method != "rrf":
        rows = np.arange(n_users)[:, None]
        for full, vals, floor in ((cf_full, cfv, cf_floor), (ret_full, rv, ret_floor)):
            if full is not None:
                true = normalise(np.asarray(full)[rows, sid], cfg.norm, full)
                missing = np.isnan(vals)
                vals[missing] = np.where(np.isfinite(true), true, floor)[missing]
    cfv = np.where(np.isnan(cfv), cf_floor, cfv)
    rv = np.where(np.isnan(rv), ret_floor, rv)
    fused = alpha[:, None] * cfv + (1.0 - alpha[:, None]) * rv
    fused[second] = -np.inf
    # columns are sorted by item id, so ties go to the lower id whatever the branch order
    pick = topk(fused, min(k, int((~second).sum(axis=1).min())))

    def g(a):
        return np.take_along_axis(a, pick, axis=1)

    return Fused(
        ids=g(sid).astype(np.int64),
        scores=g(fused).astype(np.float32),
        cf_rank=g(cfr).astype(np.int64),
        cf_score=g(cfs).astype(np.float32),
        retrieval_rank=g(rr).astype(np.int64),
        retrieval_score=g(rs).astype(np.float32),
        alpha=alpha.astype(np.float32),
    )
