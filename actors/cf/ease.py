"""EASE: a closed-form item-item linear autoencoder (Steck, WWW 2019).

B = I - P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; a user's scores are x_u B. When validation data
is given and ``lambdas`` lists several values, λ is chosen by validation NDCG@10 from one
eigendecomposition of XᵀX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np

from actors.cf.base import CFModel, Histories, ValidationSet, interaction_matrix


@dataclass
class EASEConfig:
    lam: float = 500.0
    lambdas: list[float] = field(
        default_factory=lambda: [50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0]
    )
    max_memory_gb: float | None = None  # refuse a fit that needs more (None: 80% of this machine's RAM)


class EASE(CFModel):
    name = "ease"
    Config = EASEConfig
    RUNTIME_FIELDS = ("max_memory_gb",)
    too_large_hint = (
        "use sasrec, whose memory grows with the catalog rather than with its square "
        "(EASE fits up to some tens of thousands of items)"
    )

    def memory_needed(self, n_users: int, n_items: int) -> int:
        """The dense user x item matrix (float32, and float64 for the product), five item x item float64
        matrices at the peak (the Gram matrix, its eigenvectors or inverse, P, B and a temporary), and the
        float32 weights. tests/actors/test_model_size.py checks it against a measured peak."""
        square = n_items * n_items
        return n_users * n_items * 12 + square * 8 * 5 + square * 4

    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        self.check_fits(len(sequences), n_items)
        self.n_items = n_items
        x = interaction_matrix(sequences, n_items).astype(np.float64)
        gram = x.T @ x
        if valid is None or len(self.config.lambdas) < 2:
            self.weights = self._solve(np.linalg.inv(gram + self.config.lam * np.eye(n_items)))
            return self
        evals, evecs = np.linalg.eigh(gram)
        results = {}
        best = (-1.0, None, None)
        for lam in self.config.lambdas:
            p = (evecs / (evals + lam)) @ evecs.T
            self.weights = self._solve(p)
            ndcg = valid.ndcg10(self)
            results[str(lam)] = ndcg
            if ndcg > best[0]:
                best = (ndcg, lam, self.weights)
        self.config.lam, self.weights = best[1], best[2]
        self.fit_info = {"valid_ndcg10_by_lambda": results, "lam": best[1]}
        return self

    @staticmethod
    def _solve(p: np.ndarray) -> np.ndarray:
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    def score(self, histories: Histories) -> np.ndarray:
        self._check_histories(histories)
        return interaction_matrix(histories, self.n_items) @ self.weights

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"]
