"""Chronological leave-one-out split, with an optional k-core filter.

Per user, interactions are stably sorted by timestamp (ties keep source order). The last one is the test
target, the second-to-last the validation target, and the rest is training. Users with fewer than three
interactions stay train-only. The result depends only on the input rows and their order, so the split is
reproducible bit for bit.

``cold_items = F`` makes a seeded fraction F of the items *cold*: every training interaction of theirs is
removed (from the training split, and so from every model input), while their validation and test
interactions stay, so they can still be targets. They stay in the catalog with their text: CF has never
seen them, and only a text branch over the whole catalog can rank them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MIN_EVAL_INTERACTIONS = 3


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold_items: tuple[str, ...] = ()  # items whose training interactions were removed

    def summary(self) -> dict[str, int]:
        users = pd.concat([self.train["user_id"], self.valid["user_id"], self.test["user_id"]]).nunique()
        out = {
            "train_interactions": len(self.train),
            "valid_users": len(self.valid),
            "test_users": len(self.test),
            "train_only_users": int(users - len(self.test)),
        }
        if self.cold_items:
            out |= {"cold_items": len(self.cold_items),
                    "cold_valid_targets": int(self.valid["item_id"].isin(self.cold_items).sum()),
                    "cold_test_targets": int(self.test["item_id"].isin(self.cold_items).sum())}  # fmt: skip
        return out


def kcore(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none is left."""
    if k <= 1:
        return interactions
    df = interactions
    while True:
        ucount = df["user_id"].map(df["user_id"].value_counts())
        icount = df["item_id"].map(df["item_id"].value_counts())
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            break
        df = df[keep]
    log.info("%d-core filter kept %d of %d interactions", k, len(df), len(interactions))
    return df


def chronological_order(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by user (in order of first appearance), each user's rows stably sorted by time."""
    df = interactions.reset_index(drop=True)
    user_rank = pd.factorize(df["user_id"])[0]
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), user_rank))
    return df.iloc[order].reset_index(drop=True)


def pick_cold_items(item_ids: pd.Series, fraction: float, seed: int = 0) -> tuple[str, ...]:
    """A seeded ``fraction`` of the distinct ``item_ids`` (sorted, as strings), rounded to whole items."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"cold_items must be a fraction in [0, 1), got {fraction!r}")
    items = np.sort(item_ids.astype(str).unique())
    n = int(round(fraction * len(items)))
    picked = np.random.default_rng(seed).choice(items, size=n, replace=False) if n else []
    return tuple(sorted(str(i) for i in picked))


def leave_one_out(
    interactions: pd.DataFrame, kcore_k: int = 0, cold_items: float = 0.0, seed: int = 0
) -> Split:
    """Split interactions (``user_id, item_id, timestamp``, source order) into train / valid / test; with
    ``cold_items`` > 0, a ``seed``-ed fraction of the items loses its training interactions."""
    cold = pick_cold_items(interactions["item_id"], cold_items, seed)  # checks the fraction before any work
    df = chronological_order(kcore(interactions, kcore_k))
    pos_from_end = df.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    n_user = df["user_id"].map(df["user_id"].value_counts()).to_numpy()
    evaluable = n_user >= MIN_EVAL_INTERACTIONS
    is_test = evaluable & (pos_from_end == 0)
    is_valid = evaluable & (pos_from_end == 1)
    train = df[~(is_test | is_valid)]
    if cold:
        train = train[~train["item_id"].astype(str).isin(cold)]
        log.info("%d cold items: %d training interactions removed", len(cold), int((~(is_test | is_valid)).sum()
                 - len(train)))  # fmt: skip
    return Split(
        train=train.reset_index(drop=True),
        valid=df[is_valid].reset_index(drop=True),
        test=df[is_test].reset_index(drop=True),
        cold_items=cold,
    )
