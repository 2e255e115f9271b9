"""Retriever contract: every index kind, on a tiny pool whose nearest neighbours are known."""

from __future__ import annotations

import numpy as np
import pytest

from actors.retriever import FaissRetriever, IndexConfig


def pool(n: int = 60, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


KINDS = {
    "flat": IndexConfig(kind="flat"),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=8, hnsw_ef_search=64),
    "ivf": IndexConfig(kind="ivf", ivf_nlist=4, ivf_nprobe=4),
}


@pytest.fixture(params=sorted(KINDS))
def retriever(request):
    vecs = pool()
    return FaissRetriever.build(vecs, [f"i{i}" for i in range(len(vecs))], KINDS[request.param])


def test_each_item_is_its_own_nearest_neighbour(retriever):
    ids, scores = retriever.search(retriever.vectors[:10], k=3)
    assert ids[:, 0].tolist() == list(range(10))
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_matches_exact_ranking(retriever):
    q = pool(5, seed=1)
    ids, _ = retriever.search(q, k=5)
    exact = np.argsort(-(q @ retriever.vectors.T), axis=1, kind="stable")[:, :5]
    assert (ids == exact).mean() >= 0.9  # approximate kinds may differ a little; flat is exact
    if retriever.config.kind == "flat":
        np.testing.assert_array_equal(ids, exact)


def test_k_larger_than_pool_and_no_padding(retriever):
    ids, scores = retriever.search(retriever.vectors[:2], k=1000)
    assert ids.shape == (2, 60) and (ids >= 0).all()
    assert sorted(ids[0].tolist()) == list(range(60))


def test_excluded_items_never_come_back(retriever):
    exclude = [np.array([0, 1, 2]), np.array([], dtype=np.int64)]
    ids, _ = retriever.search(retriever.vectors[:2], k=100, exclude=exclude)
    assert ids.shape == (2, 57) and (ids >= 0).all()
    assert not set(ids[0]) & {0, 1, 2}
    assert ids[1, 0] == 1
    everything = [np.arange(60)]
    assert retriever.search(retriever.vectors[:1], k=5, exclude=everything)[0].shape == (1, 0)


def test_bad_queries_are_clear_errors(retriever):
    with pytest.raises(ValueError, match="dimension 4, the index has 8"):
        retriever.search(np.zeros((1, 4), dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.search(retriever.vectors[:1], k=0)
    with pytest.raises(ValueError, match="exclude has 2 rows for 1 queries"):
        retriever.search(retriever.vectors[:1], k=3, exclude=[[], []])


def test_save_and_load_round_trip(retriever, tmp_path):
    retriever.save(tmp_path / "idx", {"variant": "test"})
    again = FaissRetriever.load(tmp_path / "idx")
    q = retriever.vectors[:4]
    np.testing.assert_array_equal(retriever.search(q, 7)[0], again.search(q, 7)[0])
    assert again.item_ids[3] == "i3" and again.config.kind == retriever.config.kind


def test_short_approximate_results_are_completed_exactly():
    vecs = pool(200)
    r = FaissRetriever.build(
        vecs, [str(i) for i in range(200)], IndexConfig(kind="ivf", ivf_nlist=20, ivf_nprobe=1)
    )
    ids, _ = r.search(vecs[:3], k=150)  # one probed list holds far fewer than 150 items
    assert ids.shape == (3, 150) and (ids >= 0).all()
    assert all(len(set(row)) == 150 for row in ids)
