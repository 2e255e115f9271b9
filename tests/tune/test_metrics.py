from __future__ import annotations

import math

import numpy as np
import pytest

from actors.ranking import mask_items, target_ranks, topk
from tune.metrics import (
    MetricContext,
    SharedRow,
    by_history_length,
    by_target_popularity,
    compute_metrics,
    intra_list_distance,
    paired_bootstrap,
    popularity_groups,
    rank_batch,
)


def test_ranking_ties_go_to_lower_index_consistently():
    scores = np.array([[1.0, 3.0, 3.0, 0.0]])
    assert topk(scores, 4).tolist() == [[1, 2, 0, 3]]
    assert target_ranks(scores, np.array([2])).tolist() == [2]
    assert target_ranks(scores, np.array([1])).tolist() == [1]
    assert topk(scores, 10).shape == (1, 4)


def test_mask_items():
    s = mask_items(np.zeros((2, 3)), [np.array([0, 2]), np.array([], dtype=int)])
    assert np.isneginf(s[0, [0, 2]]).all() and np.isfinite(s[1]).all()


def test_hand_computed_metrics():
    # 2 users, 5 items. User 0 history {0}; target 2. User 1 history {}; target 4.
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    ranked = rank_batch(scores, [np.array([0]), np.array([], dtype=int)], np.array([2, 4]), max_k=2)
    # user 0 ranking after masking: 1, 2, 3, 4 -> target rank 2. user 1: 0..4 -> target rank 5.
    assert ranked.ranks.tolist() == [2, 5]
    pop = np.array([4, 3, 2, 1, 1])
    ctx = MetricContext(n_items=5, item_popularity=pop, n_train_users=4)
    m = compute_metrics(ranked, ctx, ks=(1, 2))
    assert m["Recall@1"] == 0.0
    assert m["Recall@2"] == m["HitRate@2"] == 0.5
    assert m["NDCG@2"] == pytest.approx(0.5 / math.log2(3))
    assert m["MRR"] == pytest.approx((1 / 2 + 1 / 5) / 2)
    # top-2 lists: [1, 2] and [0, 1] -> 3 distinct of 5
    assert m["Coverage@2"] == pytest.approx(3 / 5)
    info = -np.log2(pop / 4)
    assert m["Novelty@2"] == pytest.approx((info[1] + info[2] + info[0] + info[1]) / 4)
    # head = ceil(0.2 * 5) = 1 item (item 0); both targets are tail; only user 0 hits at 2
    assert m["TailRecall@2"] == 0.5
    assert "ILD@2" not in m
    # groups of pop [4, 3, 2, 1, 1] (11 interactions): head = item 0 (0 before it), tail = items 3 and 4
    # (9/11 and 10/11 >= 0.8 before them); lists [1, 2] and [0, 1] hold no tail item
    assert m["ARP@2"] == pytest.approx((3 + 2 + 4 + 3) / 4) and m["TailShare@2"] == 0.0


def test_ild_of_orthogonal_and_identical_items():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    assert intra_list_distance(np.array([[0, 1]]), emb) == pytest.approx(1.0)
    assert intra_list_distance(np.array([[0, 2]]), emb) == pytest.approx(0.0)
    assert intra_list_distance(np.array([[0, 1, 2]]), emb) == pytest.approx(2 / 3)


def test_history_length_buckets():
    scores = np.tile(np.arange(5.0)[::-1], (3, 1))
    hists = [np.array([], dtype=int), np.array([1]), np.arange(3)]
    ranked = rank_batch(scores, hists, np.array([0, 0, 4]), max_k=1)  # user 2 ranks 3 before its target 4
    out = by_history_length(ranked, k=1, edges=(0, 1, 3))
    assert out == {"0-0": {"users": 1, "Recall@1": 1.0, "NDCG@1": 1.0},
                   "1-2": {"users": 1, "Recall@1": 1.0, "NDCG@1": 1.0},
                   "3+": {"users": 1, "Recall@1": 0.0, "NDCG@1": 0.0}}  # fmt: skip


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        rank_batch(np.array([[np.nan, 1.0]]), [np.array([], dtype=int)], np.array([1]), 1)


@pytest.mark.parametrize("selector", ["argpartition", "torch.topk"])
def test_fast_topk_equals_a_full_stable_sort_under_heavy_ties(selector, monkeypatch):
    if selector == "torch.topk":  # the path of rows of a million items, on small rows
        monkeypatch.setattr("actors.ranking.TORCH_TOPK_MIN_ITEMS", 1)
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m, k = rng.integers(1, 30), rng.integers(2, 200), rng.integers(1, 40)
        s = rng.integers(0, 4, (n, m)).astype(np.float32)
        s[rng.random((n, m)) < 0.2] = -np.inf
        np.testing.assert_array_equal(topk(s, k), np.argsort(-s, axis=1, kind="stable")[:, : min(k, m)])


def test_paired_bootstrap_known_answers():
    same = paired_bootstrap(np.array([1, 3, 50]), np.array([1, 3, 50]))
    assert same == {"diff": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "se": 0.0, "users": 3}
    always = paired_bootstrap(np.ones(20, dtype=int), np.full(20, 11))  # hit at 1 vs a miss at 10
    assert always["diff"] == always["ci95_low"] == always["ci95_high"] == 1.0 and always["se"] == 0.0
    half = paired_bootstrap(np.where(np.arange(400) % 2 == 0, 1, 11), np.full(400, 11))
    assert half["se"] == pytest.approx(0.5 / np.sqrt(400), rel=0.1)  # the standard error of a mean of 0/1
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_popularity_groups_split_the_interactions_by_share():
    # 100 interactions: item 0 holds 40 (head: nothing before it), items 1-2 the next 40 (mid: 40 and 60
    # before them), items 3-6 the last 20 (tail: 80 or more before them), item 7 was never seen (tail)
    pop = np.array([40, 25, 15, 8, 6, 4, 2, 0])
    assert popularity_groups(pop).tolist() == [0, 1, 1, 2, 2, 2, 2, 2]
    # ties keep the lower index first; a catalog no one has seen is all tail
    assert popularity_groups(np.array([1, 1, 1, 1, 1])).tolist() == [0, 1, 1, 1, 2]
    assert popularity_groups(np.zeros(3, dtype=int)).tolist() == [2, 2, 2]


def test_by_target_popularity_counts_users_per_group():
    pop = np.array([40, 25, 15, 8, 6, 4, 2, 0])
    ctx = MetricContext(n_items=8, item_popularity=pop, n_train_users=50)
    scores = np.tile(np.arange(8.0)[::-1], (4, 1))  # everyone ranks 0, 1, 2, ...
    ranked = rank_batch(scores, [np.array([], dtype=int)] * 4, np.array([0, 1, 5, 7]), max_k=3)
    out = by_target_popularity(ranked, ctx, k=3)
    assert out["head"] == {"users": 1, "Recall@3": 1.0, "NDCG@3": 1.0}
    assert out["mid"]["users"] == 1 and out["mid"]["Recall@3"] == 1.0
    assert out["tail"] == {"users": 2, "Recall@3": 0.0, "NDCG@3": 0.0}
    assert out["cold"] == {"users": 1, "Recall@3": 0.0, "NDCG@3": 0.0} and out["warm"]["users"] == 3
    m = compute_metrics(ranked, ctx, ks=(3,))
    assert m["ARP@3"] == pytest.approx((40 + 25 + 15) / 3) and m["TailShare@3"] == 0.0


def test_paired_bootstrap_of_recall():
    r = paired_bootstrap(np.array([1, 5, 11, 20]), np.array([11, 11, 11, 3]), metric="Recall")
    assert r["diff"] == pytest.approx((1 + 1 + 0 - 1) / 4)
    with pytest.raises(ValueError, match="'MAP'"):
        paired_bootstrap(np.ones(2), np.ones(2), metric="MAP")


@pytest.mark.parametrize("rows", ["short", "long"])
def test_rank_batch_equals_a_stable_sort_of_the_masked_rows(rows, monkeypatch):
    """Integer-valued scores (ties, targets tied with others), -inf items, histories with repeats and
    holding the target, float32 and float64 rows: the top lists and ranks of ``np.argsort(-masked,
    kind="stable")``, and the caller's rows left as they were."""
    if rows == "long":  # the chunked top-k and the one-pass ranks, on rows of a few hundred items
        monkeypatch.setattr("actors.ranking.CHUNK", 4)
        monkeypatch.setattr("actors.ranking.CHUNKED_TOPK_MIN_ITEMS", 1)
        monkeypatch.setattr("tune.metrics.ONE_PASS_MIN_ITEMS", 1)
        monkeypatch.setattr("actors.ranking.ONE_PASS_MIN_ITEMS", 1)
    rng = np.random.default_rng(0)
    for it in range(200):
        n, m, k = rng.integers(1, 20), rng.integers(2, 400), rng.integers(1, 30)
        s = rng.integers(0, rng.choice([3, 20, 1000]), (n, m)).astype([np.float32, np.float64][it % 2])
        s[rng.random((n, m)) < 0.2] = -np.inf
        s[np.arange(n), rng.integers(0, m, n)] = 1.0
        targets = rng.integers(0, m, n)
        hists = [rng.integers(0, m, rng.integers(0, min(m, 30))) for _ in range(n)]
        for i in np.flatnonzero(rng.random(n) < 0.2):
            hists[i] = np.append(hists[i], targets[i])
        before = s.copy()
        s.flags.writeable = False  # a memory map, say: only read
        ranked = rank_batch(s, hists, targets, k)
        masked = mask_items(before.astype(np.float32), hists)
        order = np.argsort(-masked, axis=1, kind="stable")
        np.testing.assert_array_equal(ranked.top, order[:, : min(k, m)])
        np.testing.assert_array_equal(ranked.ranks, 1 + np.argmax(order == targets[:, None], axis=1))
        np.testing.assert_array_equal(s, before)


def test_rank_batch_checks_every_row():
    empty = [np.array([], dtype=int)] * 2
    rank_batch(np.array([[np.inf, 1.0], [-np.inf, 0.0]]), empty, np.array([0, 1]), 1)  # a finite value each
    for bad, message in (([[np.inf, np.inf], [0.0, 1.0]], "no finite value"),
                         ([[1.0, 0.0], [-np.inf, -np.inf]], "no finite value"),
                         ([[np.nan, np.nan], [0.0, 1.0]], "no finite value"),
                         ([[1.0, 0.0], [np.inf, np.nan]], "no finite value"),
                         ([[1.0, 0.0], [2.0, np.nan]], "NaN")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            rank_batch(np.array(bad), empty, np.array([0, 1]), 1)
    # a float64 score past float32's range is still a finite score (the check reads the rows as given)
    with np.errstate(over="ignore"):
        ranked = rank_batch(np.array([[1e300, 1e300, 5.0]]), empty[:1], np.array([1]), 2)
    assert ranked.top.tolist() == [[0, 1]] and ranked.ranks.tolist() == [2]


def test_a_shared_row_ranks_as_every_users_copy_of_it():
    """Popularity's one row for everybody, ranked once: the same top lists and ranks as ``rank_batch`` on each
    user's copy, with integer-valued scores (ties), histories with repeats and holding the target, and
    catalogs with fewer unmasked items than k."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, m, k = rng.integers(1, 20), rng.integers(2, 300), rng.integers(1, 30)
        row = rng.integers(0, rng.choice([2, 10, 1000]), m).astype(np.float32)
        targets = rng.integers(0, m, n)
        hists = [rng.integers(0, m, rng.integers(0, min(m, 40))) for _ in range(n)]
        for i in np.flatnonzero(rng.random(n) < 0.2):
            hists[i] = np.append(hists[i], targets[i])
        shared = SharedRow(row).rank(hists, targets, k)
        each = rank_batch(np.tile(row, (n, 1)), hists, targets, k)
        for f in ("top", "ranks", "targets", "history_len"):
            np.testing.assert_array_equal(getattr(shared, f), getattr(each, f), err_msg=f)
    for bad in (np.array([1.0, np.nan]), np.array([1.0, -np.inf]), np.ones((2, 2))):
        with pytest.raises(ValueError, match="finite"):
            SharedRow(bad)


def test_popularity_is_evaluated_from_its_shared_row_with_the_same_metrics():
    import pandas as pd

    from actors.cf.popularity import Popularity
    from data_prep.corpus import Corpus
    from data_prep.split import leave_one_out
    from tune.harness import evaluate_scorer, model_scorer

    rng = np.random.default_rng(0)  # 120 users, 50 items, repeats within a history
    rows = [
        (f"u{u}", f"i{i}", t)
        for u in range(120)
        for t, i in enumerate(rng.integers(0, 50, rng.integers(3, 30)))
    ]
    split = leave_one_out(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(50)], "title": [f"T{i}" for i in range(50)]})
    corpus = Corpus.from_frames(items, split.train, split.valid, split.test)
    model = Popularity().fit(corpus.train_seqs, corpus.n_items)
    shared = model_scorer(model)
    assert isinstance(shared, SharedRow)
    for stage in ("valid", "test"):
        got = evaluate_scorer(shared, corpus, stage, batch_size=7, with_ranks=True)
        want = evaluate_scorer(lambda u, h: model.score(h), corpus, stage, batch_size=7, with_ranks=True)
        np.testing.assert_array_equal(got.pop("target_ranks"), want.pop("target_ranks"))
        assert got == want
