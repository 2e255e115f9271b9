"""ALS: implicit-feedback matrix factorisation by alternating least squares (Hu, Koren & Volinsky, ICDM
2008), fitted with ``implicit``'s CPU solver on the binary user x item matrix.

A positive (user, item) cell weighs ``alpha`` and every other cell 1 (``implicit``'s confidence); the
squared error plus ``regularization`` times the squared norms of the factors is minimised, users and items
in turn. A user's vector is solved in closed form from their history and the item factors, the same
least-squares step the fit takes for a training user, so any history (not only a training user's) has one,
and a score is the inner product with the item factors. When validation data is given and ``regularizations``
or ``alphas`` lists several values, the pair with the best validation NDCG@10 is kept (one fit per pair).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any, Self

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import ThreadpoolController

from actors.cf.base import CFModel, Histories, ValidationSet, interaction_matrix

log = logging.getLogger(__name__)


@dataclass
class ALSConfig:
    factors: int = 64
    iterations: int = 15
    regularization: float = 10.0  # the fit's when there is no validation data (after one: the chosen one)
    alpha: float = 1.0  # the weight of an observed interaction (every other cell weighs 1)
    regularizations: list[float] = field(default_factory=lambda: [1.0, 10.0, 50.0])  # chosen on validation
    alphas: list[float] = field(default_factory=lambda: [1.0, 10.0])  # chosen on validation, with the above
    seed: int = 0  # the factors' random start
    threads: int = 0  # OpenMP threads of the fit and of user vectors; 0 keeps implicit's default (all cores)
    index: str = "auto"  # rank through an item index: auto (IVF above 100,000 items), flat (exact), ivf, hnsw


# user vectors of fewer histories are solved on one thread: a solve takes tens of microseconds at 64
# factors, and waking a thread pool for one user cost milliseconds (measured: 0.13 ms on one thread, 3 to 10
# on two, on a two-core machine)
PARALLEL_MIN_USERS = 64

_blas: ThreadpoolController | None = None


def single_threaded_blas() -> AbstractContextManager[Any]:
    """BLAS limited to one thread (``implicit`` parallelises over users with OpenMP; a BLAS thread pool
    inside each of its threads slows it down, and it warns). The controller is made once: a limit then
    costs microseconds, not the milliseconds of scanning the loaded libraries."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


class ALS(CFModel):
    name = "als"
    Config = ALSConfig
    RUNTIME_FIELDS = ("threads", "index")
    FACTORISED = True

    @classmethod
    def for_remote_fit(cls, config: ALSConfig, num_cpus: float) -> ALSConfig:
        """Threads = the task's CPUs unless set."""
        return replace(config, threads=config.threads or max(int(num_cpus), 1))

    def __init__(self, config: ALSConfig | None = None) -> None:
        super().__init__(config)
        self._solver: AlternatingLeastSquares | None = None

    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        self.check_fits(len(sequences), n_items)
        cfg = self.config
        t0 = time.perf_counter()
        x = interaction_matrix(sequences, n_items)
        self.n_items = n_items
        regs = cfg.regularizations if len(cfg.regularizations) >= 2 else [cfg.regularization]
        alphas = cfg.alphas if len(cfg.alphas) >= 2 else [cfg.alpha]
        grid = list(product(regs, alphas))
        if valid is None or len(grid) < 2:
            self._set_state({"item_factors": self._fit_factors(x, cfg.regularization, cfg.alpha)})
            self.fit_info = {"fit_s": round(time.perf_counter() - t0, 2)}
            return self
        results = {}
        best: tuple[float, float, float, np.ndarray | None] = (-1.0, cfg.regularization, cfg.alpha, None)
        for reg, alpha in grid:
            self.config.regularization, self.config.alpha = reg, alpha
            self._set_state({"item_factors": self._fit_factors(x, reg, alpha)})
            ndcg = valid.ndcg10(self)
            results[f"{reg},{alpha}"] = ndcg
            log.info("ALS regularization %s, alpha %s: valid NDCG@10 %.4f", reg, alpha, ndcg)
            if ndcg > best[0]:
                best = (ndcg, reg, alpha, self.item_factors)
        self.config.regularization, self.config.alpha = best[1], best[2]
        self._set_state({"item_factors": best[3]})
        self.fit_info = {"valid_ndcg10_by_regularization_alpha": results, "regularization": best[1],
                         "alpha": best[2], "fit_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
        return self

    def _fit_factors(self, x: Any, regularization: float, alpha: float) -> np.ndarray:
        """(n_items, factors) float32 item factors of one ALS fit on the user x item matrix ``x``."""
        cfg = self.config
        with single_threaded_blas():
            als = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=regularization,
                alpha=alpha,
                iterations=cfg.iterations,
                num_threads=cfg.threads,
                random_state=cfg.seed,
            )
            als.fit(x, show_progress=False)
            # the last item step again, exactly (implicit's conjugate gradient steps start from the previous
            # factors): items with the same users get the same vector, so their scores tie in every path
            items = als.recalculate_item(np.arange(x.shape[1]), x.T.tocsr())
        return np.ascontiguousarray(items, dtype=np.float32)

    def user_vectors(self, histories: Histories) -> np.ndarray:
        """(len(histories), factors) float32: each history's least-squares user factor given the item
        factors (``implicit``'s ``recalculate_user``, an exact Cholesky solve); an empty history's is 0."""
        self._check_histories(histories)
        cfg, solver = self.config, self._solver
        solver.regularization, solver.alpha = cfg.regularization, cfg.alpha
        solver.num_threads = cfg.threads if len(histories) >= PARALLEL_MIN_USERS else 1
        x = interaction_matrix(histories, self.n_items)
        with single_threaded_blas():
            return solver.recalculate_user(np.arange(len(histories)), x)

    def item_vectors(self) -> np.ndarray:
        """(n_items, factors) float32: the item factors."""
        return self.item_factors

    def score(self, histories: Histories) -> np.ndarray:
        """``user_vectors(histories) @ item_vectors().T`` (the histories are checked there)."""
        return self.user_vectors(histories) @ self.item_factors.T

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_factors = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        with single_threaded_blas():  # implicit checks the BLAS threads when a model is made
            solver = AlternatingLeastSquares(factors=self.item_factors.shape[1])
        solver.item_factors = self.item_factors  # its Y'Y is cached on first use: one solver per state
        self._solver = solver
