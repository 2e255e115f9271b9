from __future__ import annotations

import numpy as np
import pytest

from actors.branch import BranchOutput, RowStats
from actors.rerank import FusionConfig, cf_confidence, fuse

CF_IDS, CF_S = np.array([[1, 2, 3]]), np.array([[3.0, 2.0, 1.0]])
RET_IDS, RET_S = np.array([[3, 4, 5]]), np.array([[0.9, 0.8, 0.7]])
CF, RET = BranchOutput(CF_IDS, CF_S), BranchOutput(RET_IDS, RET_S)
H = np.array([10])


def run(k=5, **cfg):
    return fuse(CF, RET, H, FusionConfig(**cfg), k)


def two_users(b: BranchOutput) -> BranchOutput:
    return BranchOutput(np.repeat(b.ids, 2, 0), np.repeat(b.scores, 2, 0))


def test_alpha_one_follows_cf_and_alpha_zero_follows_retrieval():
    assert run(method="fixed", alpha=1.0).ids.tolist() == [[1, 2, 3, 4, 5]]
    assert run(method="fixed", alpha=0.0).ids.tolist() == [[3, 4, 5, 1, 2]]


def test_union_and_provenance():
    out = run(method="fixed", alpha=0.5)
    assert sorted(out.ids[0].tolist()) == [1, 2, 3, 4, 5]  # union, no duplicates
    row = {i: j for j, i in enumerate(out.ids[0])}
    j = row[3]
    assert (out.cf_rank[0, j], out.retrieval_rank[0, j]) == (3, 1)
    assert out.cf_score[0, j] == 1.0 and out.retrieval_score[0, j] == pytest.approx(0.9)
    j = row[1]
    assert (out.cf_rank[0, j], out.retrieval_rank[0, j]) == (1, 0) and np.isnan(out.retrieval_score[0, j])


def test_rrf_puts_the_item_in_both_lists_first():
    out = run(method="rrf", alpha=0.5)
    assert out.ids[0, 0] == 3
    assert out.scores[0, 0] == pytest.approx(0.5 / 63 + 0.5 / 61)


def test_adaptive_alpha_moves_with_history_length_and_confidence():
    assert run(method="adaptive", a=10).ids[0, 0] == 1
    assert run(method="adaptive", a=-10).ids[0, 0] == 3
    hist = np.array([1, 1000])
    two = fuse(two_users(CF), two_users(RET), hist, FusionConfig(method="adaptive", a=0, b=2.0), k=5)
    assert two.alpha[1] > two.alpha[0]
    assert two.ids[1, 0] == 1 and two.ids[0, 0] == 3


def test_confidence_measures():
    peaked, flat = np.array([[10.0, 0.0, 0.0]]), np.array([[1.0, 1.0, 1.0]])
    for kind in ("margin", "entropy"):
        assert cf_confidence(peaked, kind)[0] > 0.9 and cf_confidence(flat, kind)[0] == pytest.approx(
            0.0, abs=1e-9
        )


@pytest.mark.parametrize("norm", ["zscore", "minmax"])
def test_deterministic_and_vectorised_over_users(norm):
    rng = np.random.default_rng(0)
    n, pool = 50, 40
    cf_ids = np.array([rng.permutation(pool)[:10] for _ in range(n)])
    ret_ids = np.array([rng.permutation(pool)[:10] for _ in range(n)])
    cf_s, ret_s = -np.sort(-rng.random((n, 10)), 1), -np.sort(-rng.random((n, 10)), 1)
    cfg = FusionConfig(method="adaptive", norm=norm, a=0.3, b=0.1, c=1.0)
    hl = rng.integers(1, 100, n)
    cf, ret = BranchOutput(cf_ids, cf_s), BranchOutput(ret_ids, ret_s)
    a = fuse(cf, ret, hl, cfg, 8)
    b = fuse(cf, ret, hl, cfg, 8)
    np.testing.assert_array_equal(a.ids, b.ids)
    for u in (0, 17, 49):  # each row equals fusing that user alone
        one = fuse(cf.take([u]), ret.take([u]), hl[[u]], cfg, 8)
        np.testing.assert_array_equal(one.ids[0], a.ids[u])
        assert len(set(a.ids[u])) == 8
    assert np.all(np.diff(a.scores, axis=1) <= 1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="one row per user"):
        fuse(CF, RET, np.array([1, 2]), FusionConfig(), 5)
    with pytest.raises(ValueError, match="at least one branch"):
        fuse(None, None, H, FusionConfig(), 5)
    with pytest.raises(ValueError, match="norm must be"):
        run(method="fixed", norm="l2")


def test_full_rows_fill_in_true_scores_and_set_the_scale():
    # item 9 is 4th in CF (outside its top-3) but would win with its true CF score known
    cf_full = np.array([[-np.inf, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9]])
    ret_ids, ret_s = np.array([[9, 4, 5]]), np.array([[0.9, 0.8, 0.7]])
    ret_full = np.array([[0.0, 0.1, 0.1, 0.1, 0.8, 0.7, 0.0, 0.0, 0.0, 0.9]])
    cfg = FusionConfig(method="fixed", alpha=0.5)
    floor = fuse(CF, BranchOutput(ret_ids, ret_s), H, cfg, 6)
    full = fuse(BranchOutput(CF_IDS, CF_S, cf_full), BranchOutput(ret_ids, ret_s, ret_full), H, cfg, 6)
    assert floor.ids[0, 0] != 9 and full.ids[0, 0] == 9
    z = lambda row, v: (v - row[np.isfinite(row)].mean()) / row[np.isfinite(row)].std()  # noqa: E731
    assert full.scores[0, 0] == pytest.approx(0.5 * z(cf_full[0], 0.9) + 0.5 * z(ret_full[0], 0.9), rel=1e-5)
    assert full.cf_rank[0, 0] == 0 and np.isnan(
        full.cf_score[0, 0]
    )  # provenance still says "not in CF's list"

    # statistics only: the full rows' scale, and the missing item at the branch's floor again
    stats = fuse(BranchOutput(CF_IDS, CF_S, None, RowStats.of(cf_full)),
                 BranchOutput(ret_ids, ret_s, None, RowStats.of(ret_full)), H, cfg, 6)  # fmt: skip
    assert stats.ids[0, 0] != 9
    j = stats.ids[0].tolist().index(1)  # in CF only: its z-score over the full CF row
    assert stats.scores[0, j] > 0.5 * z(cf_full[0], 3.0) + 0.5 * z(ret_full[0], 0.7) - 0.01


def test_intent_cap_bounds_every_users_alpha():
    capped = run(method="adaptive", a=10, max_alpha=0.2)
    assert capped.alpha[0] == pytest.approx(0.2)
    assert capped.ids.tolist() == run(method="fixed", alpha=0.2).ids.tolist()  # the same as an offline config


def test_a_missing_branch_leaves_the_other_ones_ranking():
    cf_only = fuse(CF, None, H, FusionConfig(method="adaptive", a=-10, max_alpha=0.3), 5)
    assert cf_only.ids.tolist() == [[1, 2, 3]] and cf_only.alpha[0] == 1.0
    assert (cf_only.retrieval_rank == 0).all() and cf_only.cf_rank.tolist() == [[1, 2, 3]]
    ret_only = fuse(None, RET, H, FusionConfig(method="rrf"), 2)
    assert ret_only.ids.tolist() == [[3, 4]] and ret_only.alpha[0] == 0.0
    assert ret_only.retrieval_score[0].tolist() == pytest.approx([0.9, 0.8])


def test_serial_answers_only_cf_candidates_reordered_by_the_fusion():
    # CF's top-2 is {1, 2}; retrieval alone would answer 3, 4, 5 first, but serially only 1 and 2 can be
    # answered, and with all the weight on retrieval (item 2 scores above item 1 there) the order flips
    cf = BranchOutput(CF_IDS, CF_S)
    ret = BranchOutput(np.array([[3, 2, 1]]), np.array([[0.9, 0.8, 0.1]]))
    out = fuse(cf, ret, H, FusionConfig(method="fixed", alpha=0.0, cf_candidates=2), 5)
    assert out.ids.tolist() == [[2, 1]]
    parallel = fuse(cf, ret, H, FusionConfig(method="fixed", alpha=0.0), 5)
    assert parallel.ids[0, 0] == 3  # the parallel answer reaches beyond CF's list
    cf_only = fuse(cf, ret, H, FusionConfig(method="fixed", alpha=1.0, cf_candidates=3), 5)
    assert cf_only.ids.tolist() == [[1, 2, 3]]


def test_serial_uses_the_full_row_for_candidates_missing_from_the_retrieval_list():
    full = np.array([[-np.inf, 0.2, 0.6, 0.9, 0.8, 0.7]], dtype=np.float32)
    cfg = FusionConfig(method="fixed", alpha=0.0, cf_candidates=3)
    # CF's candidates 1, 2, 3; only 3 is in retrieval's list (3, 4, 5): 2 and 1 take their true scores
    assert fuse(CF, BranchOutput(RET_IDS, RET_S, full=full), H, cfg, 3).ids.tolist() == [[3, 2, 1]]
    # without the row both sit at the list's floor, tied, and the lower id goes first
    assert fuse(CF, RET, H, cfg, 3).ids.tolist() == [[3, 1, 2]]


def test_serial_without_a_cf_branch_leaves_the_retrieval_ranking():
    out = fuse(None, RET, H, FusionConfig(cf_candidates=2), 3)
    assert out.ids.tolist() == [[3, 4, 5]]


def test_cf_abstains_on_items_it_never_saw_when_asked():
    # item 5 was never in training: CF's score for it is meaningless and low, retrieval ranks it first
    cf_row = np.array([[-np.inf, 3.0, 2.0, 1.0, 0.5, -2.0]], dtype=np.float32)
    ret_row = np.array([[-np.inf, 0.1, 0.2, 0.3, 0.4, 0.9]], dtype=np.float32)
    cf, ret = BranchOutput.from_rows(cf_row, 5), BranchOutput.from_rows(ret_row, 5)
    unseen = np.array([False, False, False, False, False, True])
    by_cf = fuse(cf, ret, H, FusionConfig(method="fixed", alpha=0.7), 5, unseen)
    assert by_cf.ids.tolist() == [[1, 2, 3, 4, 5]]  # CF's own score keeps the cold item last
    cfg = FusionConfig(method="fixed", alpha=0.7, unseen=1.0)
    abstain = fuse(cf, ret, H, cfg, 5, unseen)
    assert abstain.ids.tolist() == [[5, 1, 2, 3, 4]]  # scored by retrieval alone, the warm order unchanged
    per_user = fuse(cf, ret, H, cfg, 5, unseen[None, :])  # the same mask given per user
    assert per_user.ids.tolist() == abstain.ids.tolist()
    with pytest.raises(ValueError, match="needs the mask of the items CF never saw"):
        fuse(cf, ret, H, cfg, 5)


def test_an_item_cf_does_not_know_is_absent_from_its_row_not_a_zero():
    """An item added after CF's training (index 4, past CF's 4 items): CF's full row is widened with -inf,
    so the item takes CF's floor (the same as an item CF ranks last), never a CF score of 0, and enters
    through retrieval alone."""
    cf_full = np.array([[3.0, 2.0, 1.0, 0.5]], dtype=np.float32)  # every known item scores above 0
    cf = BranchOutput.from_rows(cf_full, 2).widened(5)
    assert cf.full.shape == (1, 5) and np.isneginf(cf.full[0, 4])
    assert BranchOutput.from_rows(cf_full, 2, "topn").widened(5).full is None  # nothing to widen
    ret_full = np.array([[0.1, 0.2, 0.3, 0.4, 0.9]], dtype=np.float32)
    ret = BranchOutput.from_rows(ret_full, 3)
    out = fuse(cf, ret, np.array([10]), FusionConfig(method="fixed", alpha=0.5), 5)
    new = list(out.ids[0]).index(4)
    assert out.cf_rank[0, new] == 0 and out.retrieval_rank[0, new] == 1
    # its CF value is CF's floor (just below its lowest listed item), as for an item CF did not list
    cf_floor = RowStats.of(cf_full).normalise(np.array([[2.0]]), "zscore")[0, 0] - 1e-6
    ret_value = RowStats.of(ret_full).normalise(np.array([[0.9]]), "zscore")[0, 0]
    assert out.scores[0, new] == pytest.approx(0.5 * cf_floor + 0.5 * ret_value, abs=1e-5)
    zero = RowStats.of(cf_full).normalise(np.array([[0.0]]), "zscore")[0, 0]  # what a score of 0 would be
    assert abs(cf_floor - zero) > 0.5
