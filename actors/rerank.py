"""Adaptive fusion of the CF branch and the retrieval branch: a pure, vectorised, deterministic function.

Both branches hand over a ``BranchOutput`` (top-N ids and scores per user, plus the full score rows or
their statistics). Fusion works on the union of the two lists: scores are normalised per branch (z-score
or min-max, with the statistics of the full row when the branch gives it or its statistics, else of the
top-N list), an item missing from a branch scores just below that branch's lowest listed item (or its
true score when the full row is there), and the fused score is α·cf + (1−α)·retrieval. α is fixed, or per
user: α_u = sigmoid(a + b·(log(1+|h_u|) − log 51) + c·(conf_u − ½)), where conf_u is the CF branch's
confidence (top-1 margin of the softmax over its top-N scores, or 1 − normalised entropy), and never above
``max_alpha``. Reciprocal-rank fusion (weights α and 1−α) is the rank-only alternative. A missing branch
(``None``: degraded online) is a case of the same function: α is 1 or 0 and the other branch's ranking
stands. Every output item carries its provenance: its rank (1-based; 0 = absent) and raw score in each
branch.

``cf_candidates = K`` turns the same scoring into the **serial** architecture: only the CF branch's top-K
can be answered, and the retrieval branch only reorders them (its true score where the full row is there,
else its list's floor). With K = 0 (the default) the answer is drawn from both lists: the parallel design.

``unseen = λ`` lets CF defer to retrieval on the items it never saw in training (cold items, given as a mask):
their CF value becomes λ·(their retrieval value) + (1 − λ)·(CF's own), so at λ = 1 their fused score is the
retrieval branch's alone. CF's own score for such an item (λ = 0, the default) says nothing about it but
pushes it down; λ = 1 lets the top retrieval answers among them crowd out warm items, so λ is searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args, get_origin, get_type_hints

import numpy as np

from actors.branch import BranchOutput
from actors.ranking import topk

# adaptive α: history length and confidence enter centred, so ``a`` alone sets a typical user's α
LOG_LEN_CENTRE = float(np.log1p(50))


RANGES = {"n": (1, math.inf), "alpha": (0, 1), "a": (-math.inf, math.inf), "b": (-math.inf, math.inf),
          "c": (-math.inf, math.inf), "rrf_k": (1e-9, math.inf), "max_alpha": (0, 1),
          "cf_candidates": (0, math.inf), "unseen": (0, 1)}  # fmt: skip


@dataclass
class FusionConfig:
    """How two branches' lists become one: the tuned search's output (``fusion.json``), read by Serve."""

    method: Literal["fixed", "adaptive", "rrf"] = "adaptive"
    norm: Literal["zscore", "minmax"] = "zscore"
    n: int = 100  # items taken from each branch
    alpha: float = 0.5  # fixed / rrf: weight of the CF branch
    a: float = 0.0  # adaptive: the logit of a typical user's α (history length 50, confidence ½)
    b: float = 0.0  # adaptive: change of that logit per unit of log(1 + history length)
    c: float = 0.0  # adaptive: change of that logit per unit of CF confidence
    confidence: Literal["margin", "entropy"] = "margin"
    rrf_k: float = 60.0
    max_alpha: float = 1.0  # upper bound of every user's α (a free-text intent online lowers it)
    cf_candidates: int = 0  # serial: only CF's top-K may be answered (0: parallel, both lists' union)
    unseen: float = 0.0  # items CF never saw in training: how far CF's value defers to retrieval's (0 to 1)

    def __post_init__(self) -> None:
        """Every field checked at construction (a search, ``fusion.json``, ``dataclasses.replace``): a bad
        value is an error that names the field."""
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name, (low, high) in RANGES.items():
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and low <= v <= high):
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {v!r}")


_CHOICES = {f: get_args(t) for f, t in get_type_hints(FusionConfig).items() if get_origin(t) is Literal}


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
    """(n_users,) CF weight of each user, from history lengths and the CF branch's top-N scores."""
    n = len(history_len)
    if cfg.method != "adaptive":
        alpha = np.full(n, float(cfg.alpha))
    else:
        conf = cf_confidence(cf_scores, cfg.confidence)
        centred_len = np.log1p(np.asarray(history_len, dtype=np.float64)) - LOG_LEN_CENTRE
        z = cfg.a + cfg.b * centred_len + cfg.c * (conf - 0.5)
        alpha = 1.0 / (1.0 + np.exp(-z))
    return np.minimum(alpha, cfg.max_alpha)


def fuse(
    cf: BranchOutput | None,
    retrieval: BranchOutput | None,
    history_len: np.ndarray,
    cfg: FusionConfig,
    k: int,
    unseen: np.ndarray | None = None,
) -> Fused:
    """Fuse the two branches' outputs (one row per user each) into the top-k of their lists' union.

    A branch given as ``None`` did not answer: the other one's ranking is the answer (α = 1 or 0).
    ``unseen`` marks the items CF never saw in training: (n_items,) over the item ids, or (n_users, n_ids)
    per user where ids are per-user columns; ``cfg.unseen > 0`` needs it.
    """
    if cf is None and retrieval is None:
        raise ValueError("fuse needs at least one branch")
    if not 0.0 <= cfg.unseen <= 1.0:
        raise ValueError(f"unseen must be in [0, 1], got {cfg.unseen!r}")
    if cfg.unseen and unseen is None:
        raise ValueError(f"unseen={cfg.unseen} needs the mask of the items CF never saw in training")
    n_users = len(history_len)
    if any(b is not None and len(b) != n_users for b in (cf, retrieval)):
        raise ValueError("both branches and history_len need one row per user")
    alpha = None
    if cf is None:
        cf, alpha = BranchOutput.empty(n_users), np.zeros(n_users)
    if retrieval is None:
        retrieval, alpha = BranchOutput.empty(n_users), np.ones(n_users)
    serial = cfg.cf_candidates > 0 and cf.n > 0  # with no CF list (degraded) the retrieval ranking stands
    cf, retrieval = cf.head(cfg.cf_candidates if serial else cfg.n), retrieval.head(cfg.n)
    cf_ids, cf_scores, ret_ids, ret_scores = cf.ids, cf.scores, retrieval.ids, retrieval.scores
    n_cf, n_ret = cf_ids.shape[1], ret_ids.shape[1]
    if alpha is None:
        alpha = user_alpha(cfg, history_len, cf_scores)

    def floor(vals: np.ndarray) -> np.ndarray:  # just below the branch's lowest listed item
        return vals.min(axis=1, keepdims=True) - 1e-6 if vals.shape[1] else np.zeros((n_users, 1))

    if cfg.method == "rrf":
        cf_val = 1.0 / (cfg.rrf_k + np.arange(1, n_cf + 1))[None].repeat(n_users, 0)
        ret_val = 1.0 / (cfg.rrf_k + np.arange(1, n_ret + 1))[None].repeat(n_users, 0)
        cf_floor = np.zeros((n_users, 1))
        ret_floor = np.zeros((n_users, 1))
    else:
        cf_stats, ret_stats = cf.row_stats(), retrieval.row_stats()
        cf_val, ret_val = cf_stats.normalise(cf_scores, cfg.norm), ret_stats.normalise(ret_scores, cfg.norm)
        cf_floor, ret_floor = floor(cf_val), floor(ret_val)

    # one row per user holding both lists; NaN marks "not in this branch", rank 0 "not listed". The six
    # value rows (cf value, retrieval value, cf rank, retrieval rank, cf score, retrieval score) are one
    # (n_users, 6, n_cf + n_ret) array, so each step below is one operation for all of them.
    ids = np.concatenate([cf_ids, ret_ids], axis=1)
    m = n_cf + n_ret
    vals = np.full((n_users, 6, m), np.nan)
    vals[:, 0, :n_cf], vals[:, 1, n_cf:] = cf_val, ret_val
    vals[:, 2], vals[:, 3] = 0.0, 0.0
    vals[:, 2, :n_cf], vals[:, 3, n_cf:] = np.arange(1, n_cf + 1), np.arange(1, n_ret + 1)
    vals[:, 4, :n_cf], vals[:, 5, n_cf:] = cf_scores, ret_scores

    order = np.argsort(ids, axis=1, kind="stable")
    sid = np.take_along_axis(ids, order, axis=1)
    vals = np.take_along_axis(vals, order[:, None, :], axis=2)
    dup = sid[:, 1:] == sid[:, :-1]  # an item in both lists: fold the second copy into the first
    vals[:, :, :-1] = np.where(dup[:, None, :], np.fmax(vals[:, :, :-1], vals[:, :, 1:]), vals[:, :, :-1])
    second = np.zeros_like(sid, dtype=bool)
    second[:, 1:] = dup
    cfv, rv = vals[:, 0], vals[:, 1]

    if cfg.method != "rrf":
        rows = np.arange(n_users)[:, None]
        for branch, stats, v, low in (
            (cf, cf_stats, cfv, cf_floor),
            (retrieval, ret_stats, rv, ret_floor),
        ):
            if branch.full is not None:  # an item missing from the list gets its true score
                true = stats.normalise(branch.full[rows, sid], cfg.norm)
                missing = np.isnan(v)
                v[missing] = np.where(np.isfinite(true), true, low)[missing]
    cfv = np.where(np.isnan(cfv), cf_floor, cfv)
    rv = np.where(np.isnan(rv), ret_floor, rv)
    if cfg.unseen:  # CF defers to retrieval on the items it never saw
        mask = np.asarray(unseen, dtype=bool)
        cold = mask[sid] if mask.ndim == 1 else np.take_along_axis(mask, sid, axis=1)
        cfv = np.where(cold, cfg.unseen * rv + (1.0 - cfg.unseen) * cfv, cfv)
    fused = alpha[:, None] * cfv + (1.0 - alpha[:, None]) * rv
    fused[second] = -np.inf
    eligible = ~second
    if serial:  # only CF's candidates can be answered
        eligible &= vals[:, 2] > 0
        fused[~eligible] = -np.inf
    # columns are sorted by item id, so ties go to the lower id whatever the branch order
    pick = topk(fused, min(k, int(eligible.sum(axis=1).min())))
    picked = np.take_along_axis(vals, pick[:, None, :], axis=2)

    return Fused(
        ids=np.take_along_axis(sid, pick, axis=1).astype(np.int64),
        scores=np.take_along_axis(fused, pick, axis=1).astype(np.float32),
        cf_rank=picked[:, 2].astype(np.int64),
        cf_score=picked[:, 4].astype(np.float32),
        retrieval_rank=picked[:, 3].astype(np.int64),
        retrieval_score=picked[:, 5].astype(np.float32),
        alpha=alpha.astype(np.float32),
    )
