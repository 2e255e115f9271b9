"""Leakage safety of the query sets: a target never appears in the history its query is written from."""

from __future__ import annotations

import numpy as np
import pytest

from actors.user_query import UserQueryWriter
from data_prep.queries import CatalogView, query_requests


def test_targets_never_appear_in_their_own_prompt(ml100k, ml100k_corpus):
    c = ml100k_corpus
    req = query_requests(c)
    assert len(req) == 2 * 943 and req["key"].is_unique
    index = {u: i for i, u in enumerate(c.user_ids)}
    writer = UserQueryWriter(None)
    catalog = CatalogView(str(ml100k.root))
    titles = c.items["title"].to_numpy()
    for row in req.itertuples():
        u = index[row.user_id]
        target = c.target(row.stage)[u]
        assert target not in row.history
        if row.stage == "valid":  # valid queries see neither the valid nor the test item
            assert c.test_target[u] not in row.history
        prompt = writer.conversation(catalog.history(row.history[-writer.settings.recent :]))[-1]["content"]
        shown = {titles[i] for i in row.history[-writer.settings.recent :]}
        heads = [
            ln.removeprefix("- ").removeprefix("MOST RECENT: ").rsplit(" (", 1)[0]
            for ln in prompt.splitlines()
        ]
        if titles[target] not in shown:  # (another item may share the target's title)
            assert titles[target] not in heads


def test_test_history_is_valid_history_plus_the_valid_item(ml100k_corpus):
    req = query_requests(ml100k_corpus).set_index(["user_id", "stage"])["history"]
    uid = ml100k_corpus.user_ids[0]
    v, t = req[(uid, "valid")], req[(uid, "test")]
    np.testing.assert_array_equal(t, np.append(v, ml100k_corpus.valid_target[0]))


def test_user_sample_is_seeded_and_evaluates_only_its_users(ml100k_corpus):
    from data_prep.queries import sample_users

    a, b = sample_users(ml100k_corpus, 50, seed=3), sample_users(ml100k_corpus, 50, seed=3)
    assert len(a) == 50 and list(a) == list(b) and list(a) == sorted(a)
    assert list(sample_users(ml100k_corpus, 50, seed=4)) != list(a)
    assert len(sample_users(ml100k_corpus, 10**6, seed=0)) == len(ml100k_corpus.eval_users("test"))
    sub = ml100k_corpus.evaluated_on(a)
    for stage in ("valid", "test"):
        assert sorted(sub.user_ids[sub.eval_users(stage)]) == sorted(a)
        kept = sub.eval_users(stage)
        assert [h.tolist() for h in sub.histories(stage, kept)] == [
            h.tolist() for h in ml100k_corpus.histories(stage, kept)
        ]
    assert sub.item_popularity().tolist() == ml100k_corpus.item_popularity().tolist()
    with pytest.raises(ValueError, match="not in this corpus"):
        ml100k_corpus.evaluated_on(["no-such-user"])
    with pytest.raises(ValueError, match="at least 1"):
        sample_users(ml100k_corpus, 0, seed=0)
