"""One contract every CF model passes, on a tiny dataset whose right answer is known.

Ten items in two groups, A = 0..4 and B = 5..9. Every user walks one group in a fixed cycle (0->1->...->4->0,
5->6->...->9->5). Group B has three times the users of group A, so B's items are the most popular.
Known answers for a history that ends in item 2 (group A):
- popularity: the most popular unseen item, in group B;
- EASE (co-occurrence) and ALS (factors): an unseen item of group A;
- SASRec (order): exactly item 3, the next one in the cycle.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.cf import ALS, EASE, MODELS, Popularity, SASRec
from actors.cf.sasrec import SASRecConfig, training_windows

N_ITEMS = 10
GROUP_A, GROUP_B = set(range(5)), set(range(5, 10))


def walk(group_start: int, offset: int, length: int) -> np.ndarray:
    return np.array([group_start + (offset + i) % 5 for i in range(length)], dtype=np.int64)


@pytest.fixture(scope="module")
def sequences() -> list[np.ndarray]:
    seqs = [walk(0, u % 5, 7) for u in range(10)]
    seqs += [walk(5, u % 5, 7) for u in range(30)]
    return seqs


QUERY = [np.array([0, 1, 2]), np.array([6, 7])]

CASES = {
    "pop": (lambda: Popularity(), lambda top: top[0] in GROUP_B and top[1] in GROUP_B),
    "ease": (
        lambda: EASE(EASE.Config(lam=1.0)),
        lambda top: top[0] in GROUP_A - {0, 1, 2} and top[1] in GROUP_B,
    ),
    "sasrec": (
        lambda: SASRec(SASRecConfig(max_len=8, hidden=16, epochs=60, lr=0.01, dropout=0.0, progress=False)),
        lambda top: top[0] == 3 and top[1] == 8,
    ),
    "als": (
        lambda: ALS(ALS.Config(factors=4, regularization=0.1, seed=0)),
        lambda top: top[0] in GROUP_A - {0, 1, 2} and top[1] in GROUP_B - {6, 7},
    ),
}


def test_every_registered_model_has_a_contract_case():
    assert set(CASES) == set(MODELS)


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request, sequences):
    make, expected = CASES[request.param]
    return make().fit(sequences, N_ITEMS), expected


def test_known_answer(fitted):
    model, expected = fitted
    ids, _ = model.recommend(QUERY, k=3)
    assert expected(ids[:, 0]), f"{model.name}: top-1 per query {ids[:, 0].tolist()}"


def test_score_shape_and_dtype(fitted):
    model, _ = fitted
    s = model.score(QUERY + [np.array([], dtype=np.int64)])
    assert s.shape == (3, N_ITEMS) and s.dtype == np.float32 and np.isfinite(s).all()
    # a model whose scores ignore the history says so: evaluation ranks its one row once
    shared = model.shared_scores()
    if shared is not None:
        np.testing.assert_array_equal(s, np.tile(shared, (3, 1)))


def test_recommend_excludes_seen_and_clips_k(fitted):
    model, _ = fitted
    ids, scores = model.recommend(QUERY, k=50)
    assert ids.shape == (2, N_ITEMS)
    top = model.recommend(QUERY, k=3, exclude_seen=True)[0]
    for row, hist in zip(top, QUERY, strict=True):
        assert not set(row) & set(hist.tolist())
    assert np.all(np.diff(scores[:, :3], axis=1) <= 0)


def test_save_load_round_trip(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / model.name)
    again = type(model).load(tmp_path / model.name)
    np.testing.assert_array_equal(model.score(QUERY), again.score(QUERY))
    assert (tmp_path / model.name / "config.json").is_file()


def test_fit_is_deterministic(fitted, sequences):
    model, _ = fitted
    again = type(model)(model.config).fit(sequences, N_ITEMS)
    np.testing.assert_array_equal(model.score(QUERY), again.score(QUERY))


def test_bad_history_is_a_clear_error(fitted):
    model, _ = fitted
    with pytest.raises(ValueError, match=r"histories\[0\]: item index out of range \[0, 10\)"):
        model.score([np.array([3, 10])])
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.recommend(QUERY, k=0)


def test_unfitted_model_refuses_to_score():
    with pytest.raises(RuntimeError, match="call fit"):
        Popularity().score(QUERY)


def test_load_refuses_another_models_folder(tmp_path, sequences):
    Popularity().fit(sequences, N_ITEMS).save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a 'pop' model, not 'ease'"):
        EASE.load(tmp_path / "m")


def test_training_windows_cover_every_transition():
    seq = np.arange(7)
    inputs, targets = training_windows([seq], max_len=3)
    pairs = {(a, b) for i, t in zip(inputs, targets, strict=True) for a, b in zip(i, t, strict=True) if b}
    assert pairs == {(k + 1, k + 2) for k in range(6)}  # ids are shifted by one; 0 is padding


def test_ease_selects_the_lambda_with_the_best_validation_ndcg():
    """On noisy grouped data where λ matters (best in the middle of the grid), the λ chosen from one
    eigendecomposition is the one whose separately fitted model scores best on validation."""
    from actors.cf import ValidationSet

    rng = np.random.default_rng(0)
    n_items = 30
    pop = rng.zipf(1.5, size=n_items).astype(float)
    pop /= pop.sum()
    seqs, targets = [], []
    for _ in range(150):
        group = rng.integers(0, 3)
        walk = [int(group * 10 + rng.integers(0, 10)) if rng.random() < 0.6 else int(rng.choice(n_items, p=pop))
                for _ in range(8)]  # fmt: skip
        walk = list(dict.fromkeys(walk))
        seqs.append(np.array(walk[:-1]))
        targets.append(walk[-1])
    valid = ValidationSet(seqs, np.array(targets))
    grid = [0.1, 10.0, 1000.0, 1e5]
    alone = {lam: valid.ndcg10(EASE(EASE.Config(lam=lam, lambdas=[lam])).fit(seqs, n_items)) for lam in grid}
    assert len(set(np.round(list(alone.values()), 6))) == len(grid)  # λ changes the answer here
    model = EASE(EASE.Config(lambdas=grid)).fit(seqs, n_items, valid)
    best = max(alone, key=alone.get)
    assert model.fit_info["lam"] == best == model.config.lam
    assert model.fit_info["valid_ndcg10_by_lambda"][str(best)] == pytest.approx(alone[best], abs=1e-6)
    assert valid.ndcg10(model) == pytest.approx(alone[best], abs=1e-6)  # the kept weights are that λ's


@pytest.mark.parametrize("mode", ["full", "stats", "topn"])
def test_rank_is_the_branch_output_of_recommend(fitted, mode):
    from actors.branch import RowStats
    from actors.ranking import mask_items

    model, _ = fitted
    out = model.rank(QUERY, n=4, rows=mode, batch_size=1)  # one history per batch: the batches are stacked
    ids, scores = model.recommend(QUERY, k=4)
    np.testing.assert_array_equal(out.ids, ids)
    np.testing.assert_allclose(
        out.scores, scores, rtol=0.02
    )  # SASRec's bf16 scores vary a little with the batch
    assert out.mode == mode
    masked = mask_items(model.score(QUERY), QUERY)
    if mode == "full":
        np.testing.assert_allclose(out.full, masked, rtol=0.02)
    if mode == "stats":
        np.testing.assert_allclose(out.stats.mean, RowStats.of(masked).mean, rtol=0.02, atol=1e-3)
    everything = model.rank(QUERY, n=50, rows=mode)
    assert everything.ids.shape == (2, N_ITEMS - 3)  # masked items are never listed
    for row, hist in zip(everything.ids, QUERY, strict=True):
        assert not set(row) & set(hist.tolist())


def assert_same_top(out, exact, scores: np.ndarray) -> None:
    """``out`` lists the top-n that ``exact`` lists, up to the order of tied items (an index breaks ties its
    own way; ALS gives items with the same users the same vector): the same scores, each the listed item's
    own score in ``scores``, none seen in ``QUERY``; the same ids where no two of the exact scores tie."""
    np.testing.assert_allclose(out.scores, exact.scores, rtol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(scores, out.ids, axis=1), out.scores, rtol=1e-5)
    for row, hist in zip(out.ids.tolist(), QUERY, strict=True):
        assert len(set(row)) == len(row) and not set(row) & set(hist.tolist())
    if not np.isclose(exact.scores[:, 1:], exact.scores[:, :-1], rtol=1e-5).any():
        np.testing.assert_array_equal(out.ids, exact.ids)


@pytest.mark.parametrize("mode", ["stats", "topn"])
def test_an_item_index_ranks_as_exact_ranking_does(fitted, mode, tmp_path):
    """A factorised model's scores are its user vectors times its item vectors; with an item index (one IVF
    list here, so exhaustive) ``rank`` searches it and gives the exact answer; the index is saved beside the
    weights and dropped when the config no longer asks for it. Other models never get one."""
    import copy
    from dataclasses import replace

    model, _ = fitted
    model = copy.copy(model)  # the fixture is shared: this one's config and index are its own
    if not model.FACTORISED:
        assert model.wanted_index() is None and model.build_index(QUERY) is None and model.index is None
        return
    np.testing.assert_allclose(
        model.score(QUERY), model.user_vectors(QUERY) @ model.item_vectors().T, rtol=1e-5
    )
    exact = model.rank(QUERY, n=4, rows=mode)
    assert model.wanted_index() is None  # auto: exact ranking at 10 items
    model.config = replace(model.config, index="ivf")
    index = model.build_index(QUERY)
    assert index is model.index and index.config.kind == "ivf" and index.build_info["recall_at_10"] == 1.0
    assert index.build_info["recall_on"] == "given queries" and model.index_is_current()
    out = model.rank(QUERY, n=4, rows=mode)
    assert_same_top(out, exact, model.score(QUERY))
    if mode == "stats":
        np.testing.assert_allclose(out.stats.mean, exact.stats.mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.stats.max, exact.stats.max, rtol=1e-5)
    model.save(tmp_path / "m")
    again = type(model).load(tmp_path / "m")
    assert again.index is not None and not (tmp_path / "m" / "index" / "vectors.npy").exists()
    assert_same_top(again.rank(QUERY, n=4, rows=mode), exact, model.score(QUERY))
    model.config = replace(model.config, index="auto")
    assert not model.index_is_current() and model.build_index() is None
    model.save(tmp_path / "m")
    assert type(model).load(tmp_path / "m").index is None and not (tmp_path / "m" / "index").exists()


def test_an_unknown_index_kind_is_refused_before_the_fit(sequences):
    with pytest.raises(ValueError, match=r"sasrec.index must be auto, flat, ivf or hnsw; got 'ivfpq'"):
        SASRec(SASRecConfig(index="ivfpq", epochs=1, progress=False)).fit(sequences, N_ITEMS)
