"""Trials over each user's candidates (``tune.candidates``) against trials over every item (``RetrievalParts``)."""

from __future__ import annotations

import numpy as np
import pytest

from actors.branch import BranchOutput
from actors.rerank import FusionConfig
from actors.retrieval_query import QueryParts, RetrievalWeights
from actors.retriever import ExactRetriever
from tune.branches import BranchScores, fused_lists
from tune.candidates import RetrievalCandidates, local_positions, row_union
from tune.retrieval_parts import RetrievalParts

N_USERS, N_ITEMS, DIM = 40, 120, 16
WEIGHTS = [
    RetrievalWeights(),
    RetrievalWeights(last=0.3, recent=1.0),
    RetrievalWeights(last=1.0, recent=0.5, llm=2.0, enriched=0.7),
    RetrievalWeights(last=0.0, recent=0.0, llm=1.0, enriched=3.0),
]
CONFIGS = [
    FusionConfig(method="fixed", alpha=0.5, n=30),
    FusionConfig(method="fixed", alpha=0.3, norm="minmax", n=30),
    FusionConfig(method="adaptive", a=0.4, b=0.3, c=1.0, n=30),
    FusionConfig(method="rrf", alpha=0.6, n=30),
    FusionConfig(method="fixed", alpha=0.5, n=30, cf_candidates=10),  # serial
    FusionConfig(method="fixed", alpha=0.6, n=30, unseen=1.0),  # CF abstains on unseen items
]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def both_ways(n: int, seed: int = 0) -> tuple[BranchScores, BranchScores]:
    """The same users scored over every item, and over candidates from each part's top-``n``."""
    rng = np.random.default_rng(seed)
    meta, desc = unit(rng.normal(size=(N_ITEMS, DIM))), unit(rng.normal(size=(N_ITEMS, DIM)))
    histories = [rng.choice(N_ITEMS, size=int(rng.integers(1, 9)), replace=False) for _ in range(N_USERS)]
    parts = QueryParts.build(meta, histories, unit(rng.normal(size=(N_USERS, DIM))))
    cf_rows = rng.normal(size=(N_USERS, N_ITEMS)).astype(np.float32)
    for u, h in enumerate(histories):
        cf_rows[u, h] = -np.inf
    cf = BranchOutput.from_rows(cf_rows, 30, "full")
    kept = RetrievalParts.build(parts, meta, desc, histories)
    w, users = RetrievalWeights(), np.arange(N_USERS)
    targets, hist_len = rng.integers(0, N_ITEMS, N_USERS), np.array([len(h) for h in histories])
    unseen = rng.random(N_ITEMS) < 0.1
    full = BranchScores(users, targets, hist_len, cf, kept.output(w, 30), w, kept, unseen=unseen)
    cands = RetrievalCandidates.build(parts, histories, ExactRetriever(meta), ExactRetriever(desc), n, cf=cf,
                                      moments=kept)  # fmt: skip
    cand = BranchScores.from_candidates(users, targets, hist_len, cf.with_rows("stats"), cands, w, 30, unseen)
    return full, cand


def test_rows_are_united_and_found_again():
    ids = row_union([np.array([[5, 2, 9], [1, 1, 3]]), np.array([[2, -1, 7], [3, 3, 0]])], pad=10)
    assert ids.tolist() == [[2, 5, 7, 9], [0, 1, 3, 10]]
    assert local_positions(ids, np.array([[9, 2], [3, 0]]), 10).tolist() == [[3, 0], [2, 0]]


def test_candidates_covering_the_catalog_give_the_full_rows_answer():
    """Every part's top-N spans the catalog: the retrieval answer, its statistics and every fused list are
    those of the full rows, for every weight and fusion method."""
    full, cand = both_ways(n=N_ITEMS)
    for w in WEIGHTS:
        f, c = full.with_weights(w), cand.with_weights(w)
        np.testing.assert_array_equal(c.retrieval.ids, f.retrieval.ids)
        np.testing.assert_allclose(c.retrieval.scores, f.retrieval.scores, rtol=1e-5, atol=1e-6)
        fs, cs = f.retrieval.row_stats(), c.local.row_stats()
        for name in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(getattr(cs, name), getattr(fs, name), rtol=1e-4, atol=1e-5)
        for cfg in CONFIGS:
            np.testing.assert_array_equal(fused_lists(c, cfg, 10)[0], fused_lists(f, cfg, 10)[0])


def test_short_candidate_lists_stay_close_and_survive_a_round_trip(tmp_path):
    """With each part's top-20 of 120 items the top-10 lists still agree almost everywhere, and the saved
    scores answer the same after loading."""
    full, cand = both_ways(n=20, seed=1)
    assert cand.candidates.ids.shape[1] < N_ITEMS
    agree = []
    for w in WEIGHTS:
        for cfg in CONFIGS:
            a, b = (
                fused_lists(full.with_weights(w), cfg, 10)[0],
                fused_lists(cand.with_weights(w), cfg, 10)[0],
            )
            agree.append(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))
    assert min(agree) >= 0.9, agree
    cand.save(tmp_path / "b.npz")
    back = BranchScores.load(tmp_path / "b.npz")
    assert back.tunable and back.candidates.full_rows
    w = WEIGHTS[2]
    np.testing.assert_array_equal(fused_lists(back.with_weights(w), CONFIGS[2], 10)[0],
                                  fused_lists(cand.with_weights(w), CONFIGS[2], 10)[0])  # fmt: skip


def test_enriched_weight_without_descriptions_is_a_clear_error():
    _, cand = both_ways(n=20)
    bare = RetrievalCandidates(cand.candidates.n_items, cand.candidates.ids, cand.candidates.meta, None, None)
    with pytest.raises(ValueError, match="enriched weight 0.5 needs the description vectors"):
        bare.scores(RetrievalWeights(enriched=0.5))
