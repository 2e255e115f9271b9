"""Leakage safety of the query sets: a target never appears in the history its query is written from."""

from __future__ import annotations

import numpy as np

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
