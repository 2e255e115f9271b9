"""Folding the items added online into the offline catalog: appended after every catalog item (no index
moves), counted in the manifest, once; and a replica reading the same log afterwards skips the folded
additions, so every item keeps its index and a withdrawal still applies."""

from __future__ import annotations

import asyncio
import shutil

import pandas as pd
import pytest

from serve.store import SQLiteStore

ROWS = [{"item_id": "new-1", "title": "A New Film", "year": 2026, "genres": "Drama"},
        {"item_id": "new-2", "title": "Another New Film"}]  # fmt: skip


@pytest.fixture
def artifacts(ml100k, tmp_path):
    root = tmp_path / "ml-100k"
    shutil.copytree(ml100k.root, root, ignore=shutil.ignore_patterns("online", "models", "index*"))
    store = SQLiteStore(root / "online" / "state.sqlite3")

    async def log():
        await store.add_items(ROWS)
        await store.hide_item("new-1")
        await store.hide_item("1")

    asyncio.run(log())
    store.close()
    return root


def test_folded_items_follow_the_catalog_once_and_replicas_skip_them(artifacts):
    from data_prep.artifacts import ArtifactPaths, read_json
    from q2rec.cli import main as q2rec
    from serve.config import ServeAppConfig
    from serve.fold_items import fold
    from serve.state import ServingState
    from serve.store import SQLiteStore

    paths = ArtifactPaths(artifacts)
    before = pd.read_parquet(paths.items)
    assert fold(artifacts) == ["new-1", "new-2"]
    after = pd.read_parquet(paths.items)
    assert after["item_id"].tolist() == [*before["item_id"], "new-1", "new-2"]  # appended: no index moves
    assert after.dtypes.to_dict() == before.dtypes.to_dict()
    assert after.iloc[-2]["year"] == 2026 and pd.isna(after.iloc[-1]["year"])
    manifest = read_json(paths.prepare_manifest)
    assert manifest["online_items"] == 2 and manifest["items"] == len(before) + 2
    assert (
        q2rec(["fold-items", "--artifacts", str(artifacts.parent), "--dataset", artifacts.name]) == 0
    )  # a second fold appends nothing
    assert len(pd.read_parquet(paths.items)) == len(before) + 2

    # a replica on the new catalog reads the same log: the additions are there, the withdrawals apply
    state = ServingState(ServeAppConfig(artifacts=str(artifacts), auth="none"))
    assert state.n_base == len(before) + 2
    state.apply(asyncio.run(SQLiteStore(artifacts / "online" / "state.sqlite3").catalog_changes(0)))
    assert state.n_added == 0 and state.catalog_seq == 4
    assert state.hidden == {state.index_of["new-1"], state.index_of["1"]}
    assert state.index_of["new-2"] == len(before) + 1


def test_an_item_that_does_not_fit_the_catalog_is_refused_by_name(artifacts):
    from data_prep.artifacts import ArtifactPaths
    from data_prep.prepare import append_items
    from data_prep.schema import DataError

    with pytest.raises(DataError, match=r"item 'x' cannot be appended: field\(s\) \['brand'\]"):
        append_items(ArtifactPaths(artifacts), [{"item_id": "x", "title": "X", "brand": "Acme"}])
