"""EASE's λ search: the grid is extended past an edge while the best value sits on it."""

from __future__ import annotations

import numpy as np
import pytest

from actors.cf.base import ValidationSet
from actors.cf.ease import EASE, EASEConfig

N_ITEMS = 60


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], ValidationSet]:
    """Users walk a 6-item cycle in one of 10 groups, plus two random items; validation asks for the next
    item of the cycle after three. Co-occurrence is the signal, so small λ wins."""
    rng = np.random.default_rng(0)
    seqs, hist, targets = [], [], []
    for u in range(300):
        group, offset = u % 10, int(rng.integers(6))
        walk = [group * 6 + (offset + i) % 6 for i in range(5)]
        seqs.append(np.array(walk[:4] + list(rng.choice(N_ITEMS, 2))))
        hist.append(np.array(walk[:3]))
        targets.append(walk[3])
    return seqs, ValidationSet(hist, np.array(targets))


def tried(model: EASE) -> list[float]:
    return sorted(float(k) for k in model.fit_info["valid_ndcg10_by_lambda"])


def test_a_best_value_on_the_lower_edge_extends_the_grid_until_it_is_inside(data):
    seqs, valid = data
    model = EASE(EASEConfig(lambdas=[1.0, 5.0, 20.0])).fit(seqs, N_ITEMS, valid)
    assert tried(model) == [0.5, 1.0, 5.0, 20.0]
    assert model.config.lam == model.fit_info["lam"] == 1.0


def test_the_extension_stops_after_max_extensions_and_says_so(data, caplog):
    seqs, valid = data
    model = EASE(EASEConfig(lambdas=[400.0, 800.0], max_extensions=3)).fit(seqs, N_ITEMS, valid)
    assert tried(model) == [50.0, 100.0, 200.0, 400.0, 800.0]
    assert model.fit_info["lam"] == 50.0
    assert "the best λ=50 is still on the edge" in caplog.text
    fixed = EASE(EASEConfig(lambdas=[400.0, 800.0], max_extensions=0)).fit(seqs, N_ITEMS, valid)
    assert tried(fixed) == [400.0, 800.0]


def test_weights_match_the_closed_form(data):
    seqs, _ = data
    model = EASE(EASEConfig(lam=10.0)).fit(seqs, N_ITEMS)
    x = np.zeros((len(seqs), N_ITEMS))
    for u, s in enumerate(seqs):
        x[u, s] = 1.0
    p = np.linalg.inv(x.T @ x + 10.0 * np.eye(N_ITEMS))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights, b, atol=1e-5)
    assert model.weights.flags.c_contiguous  # scipy's sparse products are slow on column-major operands


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"lam": 0.0}, "got 0.0"), ({"lambdas": [50.0, -1.0]}, "got -1.0"), ({"max_extensions": -1}, "got -1")],
)
def test_a_lambda_that_is_not_positive_is_refused_naming_it(kwargs, needle):
    with pytest.raises(ValueError, match="ease: ") as err:
        EASEConfig(**kwargs)
    assert needle in str(err.value)


def test_a_bad_lambda_from_the_command_line_is_an_error_naming_it(tmp_path, capsys):
    """`q2rec train --set ease.lam=-5` stops with exit 2 before any fit, naming the value."""
    from data_prep.synthetic import SyntheticConfig, write
    from q2rec.cli import main as q2rec

    paths = write(SyntheticConfig(users=30, items=20, min_per_user=4, max_per_user=6), tmp_path)
    code = q2rec(["train", "--artifacts", str(tmp_path), "--dataset", paths.root.name, "--models", "ease",
                  "--set", "ease.lam=-5"])  # fmt: skip
    assert code == 2 and "lam and lambdas must be > 0, got -5.0" in capsys.readouterr().err
    assert not paths.model_dir("ease").exists()
