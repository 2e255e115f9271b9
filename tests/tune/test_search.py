"""Fusion evaluation on precomputed branches, and the Ray Tune search over it."""

from __future__ import annotations

import numpy as np
import pytest

from actors.branch import BranchOutput
from actors.rerank import FusionConfig
from tune.branches import BranchScores, evaluate_fused
from tune.metrics import MetricContext


def branches(n_users: int = 40, n: int = 10, seed: int = 0) -> BranchScores:
    """CF always ranks the target 1st for even users; retrieval ranks it 1st for odd users; else 5th."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n_users) % 50
    cf_ids = np.array([rng.permutation(np.setdiff1d(np.arange(100), [t]))[:n] for t in targets])
    ret_ids = np.array([rng.permutation(np.setdiff1d(np.arange(100), [t]))[:n] for t in targets])
    for u, t in enumerate(targets):
        cf_ids[u, 0 if u % 2 == 0 else 4] = t
        ret_ids[u, 0 if u % 2 else 4] = t
    scores = np.tile(np.linspace(1.0, 0.1, n), (n_users, 1))
    cf, retrieval = BranchOutput(cf_ids, scores), BranchOutput(ret_ids, scores.copy())
    return BranchScores(np.arange(n_users), targets, np.full(n_users, 30), cf, retrieval)


CTX = MetricContext(n_items=100, item_popularity=np.ones(100, dtype=int), n_train_users=40)


def test_evaluate_fused_known_answers():
    b = branches()
    cf_only = evaluate_fused(b, FusionConfig(method="fixed", alpha=1.0), CTX, ks=(1, 10))
    assert cf_only["Recall@1"] == 0.5 and cf_only["Recall@10"] == 1.0
    ret_only = evaluate_fused(b, FusionConfig(method="fixed", alpha=0.0), CTX, ks=(1, 10))
    assert ret_only["Recall@1"] == 0.5
    mixed = evaluate_fused(b, FusionConfig(method="rrf"), CTX, ks=(1, 10))
    assert mixed["Recall@10"] == 1.0  # the target is in both lists, so it rises to the top region


@pytest.mark.slow
def test_tune_search_finds_a_config_and_writes_it(ray_cluster, tmp_path):
    from tune.search import run_search

    out = run_search(branches(), CTX, tmp_path / "tune", trials=12)
    assert out["trials"] == 12
    assert set(out["config"]) >= {"method", "norm", "n", "alpha", "a", "b", "c"}
    assert 0.0 < out["valid"]["NDCG@10"] <= 1.0
    best = evaluate_fused(branches(), FusionConfig(**out["config"]), CTX, ks=(10,))
    assert best["NDCG@10"] == pytest.approx(out["valid"]["NDCG@10"])
    assert (tmp_path / "tune" / "fusion").is_dir()  # results stay under the given storage path


@pytest.mark.slow
def test_a_seeded_search_is_reproducible(ray_cluster, tmp_path):
    from tune.search import run_search

    a, b = (run_search(branches(), CTX, tmp_path / f"tune{i}", trials=10, seed=3) for i in range(2))
    assert a["config"] == b["config"] and a["valid"] == b["valid"]
