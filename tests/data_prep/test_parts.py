"""Resumable parts: a folder reuses only the parts written under the same fingerprint."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from actors.llm.engine import EngineConfig
from data_prep import parts
from data_prep.artifacts import ArtifactPaths
from data_prep.queries import QueryJobConfig, query_job_spec, query_requests


def _write(folder, n):
    for i in range(n):
        parts.write_part(folder, pd.DataFrame({"key": [f"k{i}"]}))


def test_same_spec_keeps_the_parts(tmp_path):
    folder = tmp_path / "query_parts"
    assert parts.claim(folder, {"prompt": "a"}) == 0
    _write(folder, 2)
    assert parts.claim(folder, {"prompt": "a"}) == 0
    assert parts.read_parts(folder, ["key"])["key"].tolist() == ["k0", "k1"]


def test_another_spec_sets_the_parts_aside_without_losing_them(tmp_path):
    folder = tmp_path / "query_parts"
    parts.claim(folder, {"prompt": "a"})
    _write(folder, 3)
    assert parts.claim(folder, {"prompt": "b"}) == 3
    assert parts.read_parts(folder, ["key"]).empty
    marker = json.loads((folder / parts.MARKER).read_text())
    assert marker == {"fingerprint": parts.fingerprint({"prompt": "b"}), "spec": {"prompt": "b"}}
    aside = tmp_path / f"query_parts.stale-{parts.fingerprint({'prompt': 'a'})}"
    assert len(parts.read_parts(aside, ["key"])) == 3
    _write(folder, 1)  # and back to the first spec: set aside again, under a name that does not clash
    assert parts.claim(folder, {"prompt": "a"}) == 1
    assert len(list(tmp_path.glob("query_parts.stale-*"))) == 2


def test_parts_without_a_recorded_fingerprint_are_not_trusted(tmp_path):
    folder = tmp_path / "enrich_parts"
    _write(folder, 2)  # as written before folders recorded their fingerprint
    assert parts.claim(folder, {"prompt": "a"}) == 2
    assert len(parts.read_parts(tmp_path / "enrich_parts.stale-unrecorded", ["key"])) == 2


def test_query_spec_follows_prompt_settings_model_and_enrichment(ml100k, ml100k_corpus, tmp_path):
    root = tmp_path / "ml-100k"
    shutil.copytree(ml100k.root, root, ignore=shutil.ignore_patterns("*_parts*", "user_queries*"))
    paths = ArtifactPaths(root)
    requests = query_requests(ml100k_corpus)
    settings = {"domain": "movie", "recent": 5}
    cfg = QueryJobConfig(engine=EngineConfig(backend="transformers"))

    def fp(cfg=cfg, settings=settings):
        return parts.fingerprint(query_job_spec(paths, cfg, settings, requests))

    base = fp()
    assert fp() == base
    assert fp(settings=settings | {"recent": 3}) != base  # the prompt shows fewer items
    assert fp(cfg=QueryJobConfig(engine=EngineConfig(backend="transformers", model="/models/other"))) != base
    items = pd.read_parquet(paths.items)
    pd.DataFrame({"item_id": items["item_id"], "description": "dark, funny"}).to_parquet(
        root / "items_enriched.parquet"
    )
    assert fp() != base  # the prompts quote the enriched descriptions


def test_a_part_with_an_arrow_backed_list_column_reads_back(tmp_path):
    """Ray Data hands batches over with Arrow-backed dtypes (the queries' list column among them); a part
    written from such a frame reads back as plain lists."""
    import pyarrow as pa

    from data_prep.parts import read_parts, write_part

    frame = pd.DataFrame({"key": ["a", "b"], "queries": [["x", "y"], ["z"]]})
    frame["queries"] = frame["queries"].astype(pd.ArrowDtype(pa.list_(pa.string())))
    write_part(tmp_path, frame)
    back = read_parts(tmp_path, ["key", "queries"])
    assert back["key"].tolist() == ["a", "b"] and [list(q) for q in back["queries"]] == [["x", "y"], ["z"]]
