"""Popularity: every user gets the items most training users interacted with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from actors.cf.base import CFModel, Histories, ValidationSet


@dataclass
class PopularityConfig:
    pass


class Popularity(CFModel):
    name = "pop"
    Config = PopularityConfig

    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        self.n_items = n_items
        counts = np.zeros(n_items, dtype=np.float32)
        for seq in sequences:
            counts[np.unique(seq)] += 1.0
        self.counts = counts
        return self

    def score(self, histories: Histories) -> np.ndarray:
        self._check_histories(histories)
        return np.tile(self.counts, (len(histories), 1))

    def shared_scores(self) -> np.ndarray:
        return self.counts

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts = state["counts"]
