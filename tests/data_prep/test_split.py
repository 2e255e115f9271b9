from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from data_prep.prepare import PrepareConfig, prepare
from data_prep.split import kcore, leave_one_out


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_chronological_leave_one_out_with_ties_in_source_order():
    df = _frame([
        ("a", "i3", 30), ("a", "i1", 10), ("b", "i1", 5), ("a", "i2", 20),
        ("a", "i5", 40), ("a", "i4", 40),  # tie at t=40: i5 came first in the source, so i4 is last
        ("b", "i2", 6),  # b has 2 interactions: train-only
    ])  # fmt: skip
    s = leave_one_out(df)
    assert s.test.set_index("user_id").loc["a", "item_id"] == "i4"
    assert s.valid.set_index("user_id").loc["a", "item_id"] == "i5"
    assert s.train[s.train.user_id == "a"]["item_id"].tolist() == ["i1", "i2", "i3"]
    assert s.train[s.train.user_id == "b"]["item_id"].tolist() == ["i1", "i2"]
    assert "b" not in set(s.valid.user_id) | set(s.test.user_id)
    assert s.summary() == {"train_interactions": 5, "valid_users": 1, "test_users": 1, "train_only_users": 1}


def test_exactly_three_interactions_is_evaluable():
    s = leave_one_out(_frame([("u", "x", 1), ("u", "y", 2), ("u", "z", 3)]))
    assert (len(s.train), len(s.valid), len(s.test)) == (1, 1, 1)


def test_kcore_is_iterative():
    # item z has one interaction; removing it leaves user v with 1 -> v goes; then item y drops below 2.
    df = _frame([("u", "x", 1), ("u", "y", 2), ("w", "x", 3), ("w", "y", 4), ("v", "z", 5), ("v", "y", 6)])
    out = kcore(df, 2)
    assert set(out.user_id) == {"u", "w"} and set(out.item_id) == {"x", "y"}
    assert len(kcore(df, 0)) == len(df)


def _digest(paths):
    return {n: hashlib.sha256(paths.split(n).read_bytes()).hexdigest() for n in ("train", "valid", "test")}


def test_split_is_reproducible_bit_for_bit(tmp_path, ml100k):
    again = prepare(PrepareConfig("ml-100k"), tmp_path, force=True)
    assert _digest(again) == _digest(ml100k)


def test_no_target_leaks_into_its_model_input(ml100k_corpus):
    c = ml100k_corpus
    for stage in ("valid", "test"):
        users = c.eval_users(stage)
        assert len(users) == 943
        for u, hist in zip(users, c.histories(stage, users), strict=True):
            assert c.target(stage)[u] not in hist
    # the test input is the validation input plus exactly the validation target
    u = c.eval_users("test")[0]
    assert list(c.histories("test", [u])[0]) == [*c.histories("valid", [u])[0], c.valid_target[u]]


def test_split_is_chronological_per_user(ml100k):
    train = pd.read_parquet(ml100k.split("train"))
    valid = pd.read_parquet(ml100k.split("valid")).set_index("user_id")
    test = pd.read_parquet(ml100k.split("test")).set_index("user_id")
    last_train = train.groupby("user_id")["timestamp"].max()
    assert np.all(last_train.loc[valid.index].to_numpy() <= valid["timestamp"].to_numpy())
    assert np.all(valid.loc[test.index, "timestamp"].to_numpy() <= test["timestamp"].to_numpy())
    assert len(train) + len(valid) + len(test) == 100_000


def test_cold_items_lose_their_training_interactions_only():
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(40)}", t) for u in range(30) for t in range(8)]
    df = _frame(rows)
    plain, cold = leave_one_out(df), leave_one_out(df, cold_items=0.25, seed=1)
    assert len(cold.cold_items) == round(0.25 * df.item_id.nunique())
    assert not cold.train.item_id.isin(cold.cold_items).any()
    # validation and test are untouched: cold items stay targets
    pd.testing.assert_frame_equal(cold.valid, plain.valid)
    pd.testing.assert_frame_equal(cold.test, plain.test)
    kept = plain.train[~plain.train.item_id.isin(cold.cold_items)].reset_index(drop=True)
    pd.testing.assert_frame_equal(cold.train, kept)
    assert cold.summary()["cold_items"] == len(cold.cold_items)
    assert cold.summary()["cold_test_targets"] == int(plain.test.item_id.isin(cold.cold_items).sum())
    assert leave_one_out(df, cold_items=0.25, seed=1).cold_items == cold.cold_items  # seeded
    assert leave_one_out(df, cold_items=0.25, seed=2).cold_items != cold.cold_items


def test_cold_items_fraction_is_checked():
    import pytest

    from data_prep.schema import DataError

    with pytest.raises(ValueError, match="cold_items must be a fraction in \\[0, 1\\), got 1.5"):
        leave_one_out(_frame([("u", "x", 1), ("u", "y", 2), ("u", "z", 3)]), cold_items=1.5)
    with pytest.raises(DataError, match="--cold-items must be a fraction in \\[0, 1\\), got -0.1"):
        PrepareConfig(cold_items=-0.1)
    assert PrepareConfig(cold_items=0.1).name == "ml-100k-cold0.1" and PrepareConfig().name == "ml-100k"
