"""actors.ranking against a plain stable sort of masked rows: ties, -inf, excluded items, both row lengths."""

from __future__ import annotations

import numpy as np
import pytest

import actors.ranking as ranking
from actors.ranking import chunk_maxima, mask_items, target_ranks, topk


def reference(scores: np.ndarray, exclude: list[np.ndarray], targets: np.ndarray, k: int):
    """(top k, 1-based target ranks) of the masked rows by a full stable sort: ties to the lower index."""
    masked = mask_items(np.array(scores, copy=True), exclude)
    order = np.argsort(-masked, axis=1, kind="stable")
    ranks = 1 + np.argmax(order == targets[:, None], axis=1)
    return order[:, :k], ranks


def tied_rows(rng: np.random.Generator, n: int, m: int, levels: int) -> np.ndarray:
    """Integer-valued scores (many ties), some -inf and +inf, at least one finite value per row."""
    s = rng.integers(0, levels, (n, m)).astype(np.float32)
    s[rng.random((n, m)) < rng.choice([0.0, 0.3, 0.95])] = -np.inf
    s[rng.random((n, m)) < 0.01] = np.inf
    s[np.arange(n), rng.integers(0, m, n)] = 1.0
    return s


def exclusions(rng: np.random.Generator, n: int, m: int, targets: np.ndarray) -> list[np.ndarray]:
    """Item lists with repeats, some empty, some holding the row's target."""
    out = [rng.integers(0, m, rng.integers(0, min(m, 40))) for _ in range(n)]
    for i in np.flatnonzero(rng.random(n) < 0.2):
        out[i] = np.append(out[i], targets[i])
    return out


@pytest.fixture(params=["short rows", "torch top-k", "long rows"])
def path(request, monkeypatch):
    """'torch top-k': the k best found by torch.topk (rows past TORCH_TOPK_LOADED_MIN_ITEMS where torch is
    loaded); 'long rows': the chunked top-k and the one-pass target rank, on rows of a few hundred items."""
    if request.param == "torch top-k":
        import torch  # noqa: F401  (loaded: the rule the threshold applies under)

        monkeypatch.setattr(ranking, "TORCH_TOPK_LOADED_MIN_ITEMS", 1)
    if request.param == "long rows":
        monkeypatch.setattr(ranking, "CHUNK", 4)
        monkeypatch.setattr(ranking, "CHUNKED_TOPK_MIN_ITEMS", 1)
        monkeypatch.setattr(ranking, "ONE_PASS_MIN_ITEMS", 1)
    return request.param


def test_topk_and_ranks_with_exclusions_equal_a_stable_sort(path):
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m, k = rng.integers(1, 20), rng.integers(2, 400), rng.integers(1, 40)
        s = tied_rows(rng, n, m, levels=rng.choice([2, 5, 1000]))
        targets = rng.integers(0, m, n)
        excl = exclusions(rng, n, m, targets)
        before = s.copy()
        top, ranks = reference(s, excl, targets, min(k, m))
        np.testing.assert_array_equal(topk(s, k, exclude=excl), top)
        np.testing.assert_array_equal(target_ranks(s, targets, exclude=excl), ranks)
        np.testing.assert_array_equal(topk(s, k), reference(s, [[]] * n, targets, min(k, m))[0])
        np.testing.assert_array_equal(target_ranks(s, targets), reference(s, [[]] * n, targets, k)[1])
        np.testing.assert_array_equal(s, before)  # only read


def test_a_target_tied_with_others_ranks_after_the_lower_indices(path):
    s = np.array([[2.0, 5.0, 5.0, 5.0, 1.0, 5.0] * 3])
    exclude = [np.array([2, 9])]
    # masked: items 1, 3, 5, 7, 8, 11, 13, 14, 15, 17 score 5 (2 and 9 excluded, so -inf)
    np.testing.assert_array_equal(target_ranks(s, np.array([5]), exclude), [3])
    np.testing.assert_array_equal(target_ranks(s, np.array([2]), exclude), [17])  # after the 16 others
    np.testing.assert_array_equal(target_ranks(s, np.array([9]), exclude), [18])  # and after -inf item 2
    np.testing.assert_array_equal(topk(s, 4, exclude), [[1, 3, 5, 7]])


def test_rows_of_the_default_lengths_take_the_chunked_path(monkeypatch):
    """70,000 items, past both thresholds as they are; the chunked path is the one that ran."""
    calls = []
    chunked = ranking._chunked
    monkeypatch.setattr(ranking, "_chunked", lambda *a: calls.append(1) or chunked(*a))
    rng = np.random.default_rng(1)
    s = rng.integers(0, 50, (4, 70_000)).astype(np.float32)
    s[1] = np.floor(s[1] / 10)  # a row of only 5 distinct scores
    s[2, rng.random(70_000) < 0.9999] = -np.inf  # a row with fewer finite items than k
    targets = np.array([5, 69_999, 17, 40_000])
    excl = exclusions(rng, 4, 70_000, targets)
    top, ranks = reference(s, excl, targets, 20)
    np.testing.assert_array_equal(topk(s, 20, exclude=excl), top)
    np.testing.assert_array_equal(target_ranks(s, targets, exclude=excl), ranks)
    assert calls


def test_chunk_maxima_cover_every_item_and_keep_nan(monkeypatch):
    monkeypatch.setattr(ranking, "CHUNK", 3)
    s = np.array([[1.0, 7.0, 2.0, -np.inf, 0.0, 3.0, 9.0], [0.0, np.nan, 1.0, 4.0, 4.0, 4.0, -1.0]])
    out = chunk_maxima(s)
    np.testing.assert_array_equal(out[0], [7.0, 3.0, 9.0])
    assert np.isnan(out[1, 0]) and out[1, 1:].tolist() == [4.0, -1.0]
