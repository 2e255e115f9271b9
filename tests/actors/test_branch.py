"""actors.branch: the row statistics every fusion normalises with."""

from __future__ import annotations

import numpy as np
import pytest

from actors.branch import RowStats


def reference(rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, standard deviation, min and max over each row's finite entries, as masked copies compute them."""
    r = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(r)
    cnt = np.maximum(finite.sum(axis=1), 1)
    mean = np.where(finite, r, 0.0).sum(axis=1) / cnt
    std = np.sqrt((np.where(finite, r - mean[:, None], 0.0) ** 2).sum(axis=1) / cnt)
    lo = np.where(finite, r, np.inf).min(axis=1, initial=np.inf)
    hi = np.where(finite, r, -np.inf).max(axis=1, initial=-np.inf)
    return mean, std, lo, hi


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_statistics_equal_the_masked_reference_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((50, 333)) * 3 + 1).astype(dtype)
    rows[rng.random(rows.shape) < 0.2] = -np.inf
    rows[3] = -np.inf  # every item masked
    rows[4, 7], rows[5, 9] = np.nan, np.inf  # neither counts
    rows[6] = 2.5  # constant: standard deviation 0
    before = rows.copy()
    stats = RowStats.of(rows)
    for got, want in zip((stats.mean, stats.std, stats.min, stats.max), reference(rows), strict=True):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    assert stats.mean[3] == 0.0 and stats.min[3] == np.inf and stats.max[3] == -np.inf
    assert stats.std[6] == 0.0
    np.testing.assert_array_equal(rows, before)  # only read
