"""A prepared dataset as arrays: dense item and user indices, histories and leave-one-out targets.

Item index = row of ``items.parquet``; user index = order of first appearance in the split. Models and
metrics only ever see these indices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from data_prep.artifacts import ArtifactPaths

Stage = Literal["valid", "test"]


@dataclass
class Corpus:
    items: pd.DataFrame
    user_ids: np.ndarray  # (n_users,) str
    train_seqs: list[np.ndarray]  # per user, item indices in chronological order
    valid_target: np.ndarray  # (n_users,) item index, -1 for train-only users
    test_target: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy(dtype=str)

    def eval_users(self, stage: Stage) -> np.ndarray:
        """Indices of the users that have a target at ``stage``."""
        return np.flatnonzero(self.target(stage) >= 0)

    def evaluated_on(self, user_ids: Iterable[str]) -> Corpus:
        """The same corpus with only ``user_ids`` evaluated: the other users' targets become -1 (their
        histories still train and count towards popularity). An unknown id is an error that names it."""
        keep = np.asarray(sorted({str(u) for u in user_ids}), dtype=str)
        unknown = keep[~np.isin(keep, self.user_ids)]
        if len(unknown):
            raise ValueError(f"{len(unknown)} user ids not in this corpus (e.g. {unknown[:3].tolist()})")
        inside = np.isin(self.user_ids, keep)
        return replace(self, valid_target=np.where(inside, self.valid_target, -1),
                       test_target=np.where(inside, self.test_target, -1))  # fmt: skip

    def target(self, stage: Stage) -> np.ndarray:
        if stage not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        return self.valid_target if stage == "valid" else self.test_target

    def histories(self, stage: Stage, users: np.ndarray | None = None) -> list[np.ndarray]:
        """Model input for predicting ``stage``'s target: train items, plus the validation item for test.

        Never includes the target being predicted.
        """
        users = self.eval_users(stage) if users is None else users
        if stage == "valid":
            return [self.train_seqs[u] for u in users]
        if stage != "test":
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        return [
            np.append(self.train_seqs[u], self.valid_target[u])
            if self.valid_target[u] >= 0
            else self.train_seqs[u]
            for u in users
        ]

    def item_popularity(self) -> np.ndarray:
        """Distinct training users per item."""
        pop = np.zeros(self.n_items, dtype=np.int64)
        for seq in self.train_seqs:
            np.add.at(pop, np.unique(seq), 1)
        return pop

    @classmethod
    def from_frames(
        cls, items: pd.DataFrame, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame
    ) -> Corpus:
        item_index = pd.Index(items["item_id"].astype(str))
        user_ids = pd.unique(pd.concat([train["user_id"], valid["user_id"], test["user_id"]]).astype(str))
        user_index = pd.Index(user_ids)
        tr_u = user_index.get_indexer(train["user_id"].astype(str))
        tr_i = item_index.get_indexer(train["item_id"].astype(str))
        order = np.argsort(tr_u, kind="stable")  # train rows are chronological within a user
        bounds = np.searchsorted(tr_u[order], np.arange(len(user_ids) + 1))
        items_sorted = tr_i[order]
        seqs = [items_sorted[bounds[u] : bounds[u + 1]].astype(np.int64) for u in range(len(user_ids))]

        def targets(df: pd.DataFrame) -> np.ndarray:
            t = np.full(len(user_ids), -1, dtype=np.int64)
            t[user_index.get_indexer(df["user_id"].astype(str))] = item_index.get_indexer(
                df["item_id"].astype(str)
            )
            return t

        return cls(
            items.reset_index(drop=True), np.asarray(user_ids, dtype=str), seqs, targets(valid), targets(test)
        )

    @classmethod
    def load(cls, paths: ArtifactPaths) -> Corpus:
        read = pd.read_parquet
        return cls.from_frames(
            read(paths.items),
            read(paths.split("train")),
            read(paths.split("valid")),
            read(paths.split("test")),
        )
