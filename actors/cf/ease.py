"""EASE: a closed-form item-item linear autoencoder (Steck, WWW 2019).

B = I - P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; a user's scores are x_u B. X stays sparse: the
Gram matrix XᵀX and every user's scores are sparse products, so the only dense work is on item x item
matrices (a Cholesky factorisation and its inverse per λ, in float32). When validation data is given and
``lambdas`` lists several values, λ is chosen by validation NDCG@10; while the best value sits on an edge of
the grid, the grid is extended past that edge (halving or doubling, at most ``max_extensions`` times).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import torch

from actors.cf.base import CFModel, Histories, ValidationSet, interaction_matrix

log = logging.getLogger(__name__)


@dataclass
class EASEConfig:
    lam: float = 500.0
    lambdas: list[float] = field(
        default_factory=lambda: [50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0]
    )
    max_extensions: int = 6  # λ values tried past an edge of ``lambdas`` while the best sits on it
    max_memory_gb: float | None = None  # refuse a fit that needs more (None: 80% of this machine's RAM)

    def __post_init__(self) -> None:
        bad = [v for v in [self.lam, *self.lambdas] if not v > 0]  # λ makes the Gram matrix invertible
        if bad:
            raise ValueError(f"ease: lam and lambdas must be > 0, got {bad[0]!r}")
        if self.max_extensions < 0:
            raise ValueError(f"ease: max_extensions must be >= 0, got {self.max_extensions}")


class EASE(CFModel):
    name = "ease"
    Config = EASEConfig
    RUNTIME_FIELDS = ("max_memory_gb",)
    too_large_hint = (
        "use sasrec or als, whose memory grows with the catalog rather than with its square "
        "(EASE fits up to some tens of thousands of items)"
    )

    def memory_needed(self, n_users: int, n_items: int) -> int:
        """Five float32 item x item matrices at the peak (the Gram matrix, Gram + λI, its Cholesky factor, the
        inverse turned into B, and the best B so far); the sparse interactions are small beside them.
        tests/actors/test_model_size.py checks it against a measured peak."""
        return n_items * n_items * 4 * 5

    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        self.check_fits(len(sequences), n_items)
        self.n_items = n_items
        x = interaction_matrix(sequences, n_items)
        gram = torch.from_numpy((x.T @ x).toarray())  # co-occurrence counts: exact in float32
        if valid is None or len(self.config.lambdas) < 2:
            self.weights = self._solve(gram, self.config.lam)
            return self
        pending = sorted(set(self.config.lambdas))
        results: dict[float, float] = {}
        best = (-1.0, 0.0, None)
        extensions = 0
        while pending:
            lam = pending.pop(0)
            t0 = time.perf_counter()
            self.weights = self._solve(gram, lam)
            results[lam] = valid.ndcg10(self)
            log.info("ease: λ=%g valid NDCG@10 %.4f (%.1f s)", lam, results[lam], time.perf_counter() - t0)
            if results[lam] > best[0]:
                best = (results[lam], lam, self.weights)
            if not pending and extensions < self.config.max_extensions:
                lo, hi = min(results), max(results)
                if best[1] in (lo, hi):  # the best sits on an edge: look past it
                    pending.append(lo / 2 if best[1] == lo else hi * 2)
                    extensions += 1
        if best[1] in (min(results), max(results)):
            log.warning(
                "ease: the best λ=%g is still on the edge of the values tried %s", best[1], sorted(results)
            )
        self.config.lam, self.weights = best[1], best[2]
        self.fit_info = {
            "valid_ndcg10_by_lambda": {str(k): results[k] for k in sorted(results)},
            "lam": best[1],
        }
        return self

    @staticmethod
    def _solve(gram: torch.Tensor, lam: float) -> np.ndarray:
        """B for one λ: P = (G + λI)⁻¹ from its Cholesky factor, B = -P / diag(P), diag(B) = 0."""
        a = gram.clone()
        a.diagonal().add_(lam)
        torch.linalg.cholesky(a, out=a)
        p = torch.cholesky_inverse(a).mT  # LAPACK writes column-major; P is symmetric, so its transpose is P
        del a
        p.div_(-p.diagonal().clone()[None, :])
        p.fill_diagonal_(0.0)
        return np.ascontiguousarray(p.numpy())

    def score(self, histories: Histories) -> np.ndarray:
        self._check_histories(histories)
        return np.asarray(interaction_matrix(histories, self.n_items) @ self.weights, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"]
