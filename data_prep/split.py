"""Chronological leave-one-out split, with an optional k-core filter.

Per user, interactions are stably sorted by timestamp (ties keep source order). The last one is the test
target, the second-to-last the validation target, and the rest is training. Users with fewer than three
interactions stay train-only. The result depends only on the input rows and their order, so the split is
reproducible bit for bit.
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

    def summary(self) -> dict[str, int]:
        return {
            "train_interactions": len(self.train),
            "valid_users": len(self.valid),
            "test_users": len(self.test),
            "train_only_users": int(self.train["user_id"].nunique() - len(self.test)),
        }


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


def leave_one_out(interactions: pd.DataFrame, kcore_k: int = 0) -> Split:
    """Split interactions (``user_id, item_id, timestamp``, source order) into train / valid / test."""
    df = chronological_order(kcore(interactions, kcore_k))
    pos_from_end = df.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    n_user = df["user_id"].map(df["user_id"].value_counts()).to_numpy()
    evaluable = n_user >= MIN_EVAL_INTERACTIONS
    is_test = evaluable & (pos_from_end == 0)
    is_valid = evaluable & (pos_from_end == 1)
    train = df[~(is_test | is_valid)].reset_index(drop=True)
    return Split(
        train=train, valid=df[is_valid].reset_index(drop=True), test=df[is_test].reset_index(drop=True)
    )
