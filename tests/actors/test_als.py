"""ALS beyond the shared contract (``test_cf_contract.py``): its user vectors are the closed-form
least-squares step for any history, and validation chooses its regularization and alpha."""

from __future__ import annotations

import numpy as np
import pytest

from actors.cf import ALS, ValidationSet
from actors.cf.als import ALSConfig


def noisy_groups(seed: int = 0, users: int = 150, n_items: int = 30) -> tuple[list[np.ndarray], np.ndarray]:
    """Histories of three groups of ten items, 60% in-group and the rest by a Zipf popularity, each with its
    next item (as in the EASE selection test)."""
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.5, size=n_items).astype(float)
    pop /= pop.sum()
    seqs, targets = [], []
    for _ in range(users):
        group = rng.integers(0, 3)
        walk = [
            int(group * 10 + rng.integers(0, 10)) if rng.random() < 0.6 else int(rng.choice(n_items, p=pop))
            for _ in range(8)
        ]
        walk = list(dict.fromkeys(walk))
        seqs.append(np.array(walk[:-1]))
        targets.append(walk[-1])
    return seqs, np.array(targets)


def closed_form(item_factors: np.ndarray, history: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """The ALS user step in float64: (YᵀY + reg·I + (alpha - 1)·Y_uᵀY_u)⁻¹ · alpha·Σ_{i∈u} y_i
    (implicit's confidence: an observed cell weighs alpha, every other 1)."""
    y = item_factors.astype(np.float64)
    yu = y[np.unique(history)]
    a = y.T @ y + reg * np.eye(y.shape[1]) + (alpha - 1.0) * yu.T @ yu
    return np.linalg.solve(a, alpha * yu.sum(axis=0))


@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_user_vectors_are_the_least_squares_step_for_any_history(alpha):
    seqs, _ = noisy_groups()
    model = ALS(ALSConfig(factors=8, regularization=2.0, alpha=alpha)).fit(seqs, 30)
    others = [np.array([3, 3, 17]), np.array([], dtype=np.int64), np.arange(30)]  # repeats, empty, all items
    histories = seqs[:20] + others
    got = model.user_vectors(histories)
    assert got.dtype == np.float32 and got.shape == (len(histories), 8)
    want = np.stack([closed_form(model.item_vectors(), h, 2.0, alpha) for h in histories])
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(got[-2], 0.0)  # an empty history: no evidence, the zero vector
    np.testing.assert_array_equal(model.user_vectors(histories[:1])[0], got[0])  # a batch of one: the same


def test_validation_chooses_regularization_and_alpha():
    """Every grid pair is fitted and scored; the pair with the best validation NDCG@10 is kept, with its own
    factors, and the config says which it is (as saved beside the weights)."""
    seqs, targets = noisy_groups()
    valid = ValidationSet(seqs, targets)
    grid = {"regularizations": [0.1, 10.0, 1000.0], "alphas": [1.0, 20.0]}
    alone = {
        (r, a): valid.ndcg10(ALS(ALSConfig(factors=8, regularization=r, alpha=a)).fit(seqs, 30))
        for r in grid["regularizations"]
        for a in grid["alphas"]
    }
    assert len(set(np.round(list(alone.values()), 6))) > 1  # the pair changes the answer here
    model = ALS(ALSConfig(factors=8, **grid)).fit(seqs, 30, valid)
    best = max(alone, key=alone.get)
    info, cfg = model.fit_info, model.config
    assert (info["regularization"], info["alpha"]) == best == (cfg.regularization, cfg.alpha)
    assert set(info["valid_ndcg10_by_regularization_alpha"]) == {f"{r},{a}" for r, a in alone}
    assert info["valid_ndcg10_by_regularization_alpha"][f"{best[0]},{best[1]}"] == pytest.approx(alone[best])
    assert valid.ndcg10(model) == pytest.approx(alone[best], abs=1e-6)  # the kept factors are that pair's


def test_without_validation_or_with_a_one_point_grid_the_config_values_are_fitted():
    seqs, targets = noisy_groups()
    plain = ALS(ALSConfig(factors=8, regularization=3.0, alpha=2.0)).fit(seqs, 30)
    one_point = ALSConfig(factors=8, regularization=3.0, alpha=2.0, regularizations=[], alphas=[5.0])
    fixed = ALS(one_point).fit(seqs, 30, ValidationSet(seqs, targets))
    np.testing.assert_array_equal(plain.item_vectors(), fixed.item_vectors())
    assert "valid_ndcg10_by_regularization_alpha" not in fixed.fit_info


def test_a_remote_fit_uses_the_tasks_cpus_unless_threads_are_set():
    assert ALS.for_remote_fit(ALSConfig(), 4).threads == 4
    assert ALS.for_remote_fit(ALSConfig(threads=1), 4).threads == 1
    assert set(ALS.RUNTIME_FIELDS) == {"threads", "index"}
