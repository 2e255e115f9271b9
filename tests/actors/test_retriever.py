"""Retriever contract: every retriever (exact, each FAISS index kind, the last-item scorer) on a tiny pool
whose nearest neighbours are known, small enough that the approximate kinds search it exhaustively."""

from __future__ import annotations

import numpy as np
import pytest

from actors.branch import BranchOutput, RowStats
from actors.retriever import (
    ExactRetriever,
    FaissRetriever,
    GrowingRetriever,
    IndexConfig,
    LastItemRetriever,
    Retriever,
)

N, D = 60, 8


def pool(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


IDS = [f"i{i}" for i in range(N)]
RETRIEVERS = {
    "exact": lambda v: ExactRetriever(v, IDS),
    "faiss-flat": lambda v: FaissRetriever.build(v, IDS, IndexConfig(kind="flat")),
    # exhaustive on 60 items: efSearch above the pool size, every IVF list probed
    "faiss-hnsw": lambda v: FaissRetriever.build(
        v, IDS, IndexConfig(kind="hnsw", hnsw_m=8, hnsw_ef_search=128)
    ),
    "faiss-ivf": lambda v: FaissRetriever.build(v, IDS, IndexConfig(kind="ivf", ivf_nlist=4, ivf_nprobe=4)),
    "lastitem": lambda v: LastItemRetriever(ExactRetriever(v, IDS)),
    # a catalog of 45 indexed items and 15 added online in two batches: one pool to every test
    "growing-flat": lambda v: grown(FaissRetriever.build(v[:45], IDS[:45], IndexConfig(kind="flat")), v),
    "growing-ivf": lambda v: grown(
        FaissRetriever.build(v[:45], IDS[:45], IndexConfig(kind="ivf", ivf_nlist=3, ivf_nprobe=3)), v
    ),
}


def grown(base: Retriever, v: np.ndarray) -> GrowingRetriever:
    out = GrowingRetriever(base)
    out.add(v[45:50], IDS[45:50], seq=1)
    out.add(v[45:55], IDS[50:], seq=2)  # the wrong vectors first: replaced as when descriptions land
    out.replace(IDS[50:], v[50:])
    return out


@pytest.fixture(params=sorted(RETRIEVERS))
def retriever(request) -> Retriever:
    return RETRIEVERS[request.param](pool())


def brute_force(q: np.ndarray, exclude=None, k: int = N) -> np.ndarray:
    s = q @ pool().T
    for i, e in enumerate(exclude or []):
        s[i, list(e)] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_each_item_is_its_own_nearest_neighbour(retriever):
    out = retriever.search(retriever.vectors[:10], k=3)
    assert isinstance(out, BranchOutput) and out.mode == "topn"
    assert out.ids[:, 0].tolist() == list(range(10))
    assert np.allclose(out.scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(out.scores, axis=1) <= 1e-6)


def test_equals_brute_force_on_an_exhaustively_searched_pool(retriever):
    q = pool(5, seed=1)
    out = retriever.search(q, k=7)
    np.testing.assert_array_equal(out.ids, brute_force(q, k=7))
    np.testing.assert_allclose(out.scores, np.take_along_axis(q @ pool().T, out.ids, axis=1), atol=1e-5)


def test_k_larger_than_pool_and_no_padding(retriever):
    out = retriever.search(retriever.vectors[:2], k=1000)
    assert out.ids.shape == (2, N) and (out.ids >= 0).all()
    assert sorted(out.ids[0].tolist()) == list(range(N))


def test_excluded_items_never_come_back(retriever):
    exclude = [np.array([0, 1, 2]), np.array([], dtype=np.int64)]
    out = retriever.search(retriever.vectors[:2], k=100, exclude=exclude)
    assert out.ids.shape == (2, N - 3) and (out.ids >= 0).all()
    assert not set(out.ids[0]) & {0, 1, 2}
    assert out.ids[1, 0] == 1
    assert retriever.search(retriever.vectors[:1], k=5, exclude=[np.arange(N)]).ids.shape == (1, 0)


@pytest.mark.parametrize("mode", ["full", "stats"])
def test_rest_of_the_catalog_full_rows_or_their_statistics(retriever, mode):
    q, exclude = pool(3, seed=2), [np.array([4, 9]), np.array([], dtype=np.int64), np.array([0])]
    out = retriever.search(q, k=5, exclude=exclude, rows=mode)
    truth = q @ pool().T
    for i, e in enumerate(exclude):
        truth[i, e] = -np.inf
    np.testing.assert_array_equal(out.ids, brute_force(q, exclude, k=5))
    want = RowStats.of(truth)
    got = out.row_stats()
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-5, err_msg=name)
    if mode == "full":
        np.testing.assert_allclose(out.full, truth, atol=1e-5)
    else:
        assert out.full is None


def test_bad_queries_are_clear_errors(retriever):
    with pytest.raises(ValueError, match=f"dimension 4, the index has {D}"):
        retriever.search(np.zeros((1, 4), dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.search(retriever.vectors[:1], k=0)
    with pytest.raises(ValueError, match="exclude has 2 rows for 1 queries"):
        retriever.search(retriever.vectors[:1], k=3, exclude=[[], []])
    with pytest.raises(ValueError, match="rows must be one of"):
        retriever.search(retriever.vectors[:1], k=3, rows="all")


def test_faiss_save_and_load_round_trip(tmp_path):
    retriever = RETRIEVERS["faiss-hnsw"](pool())
    retriever.save(tmp_path / "idx", {"variant": "test"})
    again = FaissRetriever.load(tmp_path / "idx")
    q = retriever.vectors[:4]
    np.testing.assert_array_equal(retriever.search(q, 7).ids, again.search(q, 7).ids)
    assert again.item_ids[3] == "i3" and again.config.kind == "hnsw"


def test_short_approximate_results_are_completed_exactly():
    vecs = pool(200)
    r = FaissRetriever.build(
        vecs, [str(i) for i in range(200)], IndexConfig(kind="ivf", ivf_nlist=20, ivf_nprobe=1)
    )
    out = r.search(vecs[:3], k=150)  # one probed list holds far fewer than 150 items
    assert out.ids.shape == (3, 150) and (out.ids >= 0).all()
    assert all(len(set(row)) == 150 for row in out.ids)


def test_last_item_retriever_queries_with_the_last_item_and_skips_the_history():
    r = LastItemRetriever(FaissRetriever.build(pool(), IDS))
    histories = [np.array([5, 7]), np.array([], dtype=np.int64)]
    out = r.recommend(histories, k=4)
    np.testing.assert_array_equal(out.ids[0], brute_force(pool()[[7]], [[5, 7]], k=4)[0])
    assert np.all(out.scores[1] == 0)  # no history: a zero query scores every item 0


def clustered(n: int, d: int = 16, seed: int = 1) -> np.ndarray:
    """Unit vectors around 40 centres: real neighbourhoods, as sentence embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    v = centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_auto_index_is_exact_up_to_its_threshold_and_ivf_above():
    vecs = clustered(2000)
    ids = [str(i) for i in range(2000)]
    exact = FaissRetriever.build(vecs, ids, IndexConfig(exact_max_items=2000))
    assert exact.config.kind == "flat" and exact.build_info == {"recall_at_10": 1.0}
    ivf = FaissRetriever.build(vecs, ids, IndexConfig(exact_max_items=1999, target_recall=0.9))
    assert ivf.config.kind == "ivf" and ivf.config.ivf_nlist == 51  # min(n // 39, 4 * sqrt(n))
    assert 1 <= ivf.config.ivf_nprobe < ivf.config.ivf_nlist  # tuned: fewer lists than all of them
    assert ivf.build_info["recall_at_10"] >= 0.9 and ivf.build_info["recall_queries"] == 1000


def test_measured_recall_is_the_recall_against_exact_search(tmp_path):
    """The recall written at build time is the index's own: each sampled item's top 10 (itself left out)
    against the exact top 10; saved into index.json and the tuned nprobe restored by load."""
    from actors.retriever import recall_sample

    vecs, ids = clustered(3000), [str(i) for i in range(3000)]
    ivf = FaissRetriever.build(vecs, ids, IndexConfig(kind="ivf", ivf_nprobe=1, recall_queries=300))
    rows = recall_sample(vecs, 300).skip
    _, raw = ivf.index.search(vecs[rows], 11)  # the index itself (search() completes short rows exactly)
    got = [row[row != r][:10] for r, row in zip(rows, raw, strict=True)]
    want = ExactRetriever(vecs).search(vecs[rows], 10, exclude=[np.array([r]) for r in rows]).ids
    mine = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert ivf.build_info["recall_at_10"] == pytest.approx(mine, abs=0.01) and mine < 0.99
    ivf.save(tmp_path / "idx")
    info = __import__("json").loads((tmp_path / "idx" / "index.json").read_text())
    assert info["recall_at_10"] == ivf.build_info["recall_at_10"] and info["config"]["kind"] == "ivf"
    tuned = FaissRetriever.build(vecs, ids, IndexConfig(kind="ivf", target_recall=0.99))
    tuned.save(tmp_path / "tuned")
    again = FaissRetriever.load(tmp_path / "tuned")
    assert again.index.nprobe == tuned.config.ivf_nprobe > 1


def test_growing_retriever_replaces_only_items_added_online():
    r = RETRIEVERS["growing-flat"](pool())
    with pytest.raises(ValueError, match="not added here"):
        r.replace([IDS[0]], pool()[:1])  # an item of the built index keeps its vector
    with pytest.raises(ValueError, match="vectors for 2 items"):
        r.replace(IDS[50:52], pool()[:1])


def test_growing_retriever_leaves_out_what_came_after_a_log_position():
    r = grown(ExactRetriever(pool()[:45], IDS[:45]), pool())
    assert r.size == N and r.item_ids[-1] == IDS[-1]
    assert r.added_after(0).tolist() == list(range(45, N)) and r.added_after(1).tolist() == list(range(50, N))
    assert r.added_after(2).size == 0
    out = r.search(r.vectors[[52]], k=3, exclude=[r.added_after(1)])  # the item itself came at position 2
    assert 52 not in out.ids[0] and not set(out.ids[0]) & set(range(50, N))
    with pytest.raises(ValueError, match="vectors for 2 items"):
        r.add(pool(3), ["a", "b"])
