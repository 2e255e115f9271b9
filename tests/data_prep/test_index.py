"""Embedding on Ray Data with the packaged encoder, and the FAISS index over the whole ML-100K catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actors.encoder import EncoderConfig
from actors.retriever import FaissRetriever, IndexConfig
from data_prep.index import build_variant, item_texts
from data_prep.schema import DataError

pytestmark = pytest.mark.slow


def test_metadata_index_over_the_whole_catalog(ray_cluster, ml100k):
    info = build_variant(ml100k, "metadata", IndexConfig(), EncoderConfig())
    assert (info["size"], info["dim"]) == (1682, 384)
    retriever = FaissRetriever.load(ml100k.index_dir("metadata"))
    assert retriever.item_ids.tolist() == pd.read_parquet(ml100k.items)["item_id"].tolist()
    assert np.allclose(np.linalg.norm(retriever.vectors, axis=1), 1.0, atol=1e-4)
    ids = retriever.search(retriever.vectors[[0]], k=5).ids
    assert ids[0, 0] == 0  # Toy Story finds itself first
    again = build_variant(ml100k, "metadata", IndexConfig(), EncoderConfig())
    assert again["inputs"] == info["inputs"]  # unchanged inputs: reused, not rebuilt


def test_encoder_query_finds_the_right_movie(ray_cluster, ml100k):
    from actors.encoder import TextEncoder

    retriever = FaissRetriever.load(ml100k.index_dir("metadata"))
    q = TextEncoder().encode(["Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War."])
    ids = retriever.search(q, k=3).ids
    assert "Star Wars" in pd.read_parquet(ml100k.items).iloc[ids[0, 0]]["title"]


def test_enriched_variant_needs_enrichment_first(ml100k, tmp_path):
    from data_prep.artifacts import ArtifactPaths

    empty = ArtifactPaths(tmp_path)
    pd.read_parquet(ml100k.items).to_parquet(empty.items)
    with pytest.raises(DataError, match="items_enriched.parquet: not found"):
        item_texts(empty, "enriched")


def test_embedding_resumes_from_the_parts_it_wrote(ray_cluster, tmp_path, caplog):
    """A run writes a part per call; a rerun after losing one part encodes only that part's rows, and the
    vectors equal the first run's."""
    import logging

    from data_prep.index import embed_texts

    texts = [f"Movie number {i}. Genres: Drama." for i in range(120)]
    folder = tmp_path / "metadata.embed_parts"
    first = embed_texts(texts, EncoderConfig(), progress=False, parts_dir=folder, part_rows=40)
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) == 3
    parts[1].unlink()  # as if the run had stopped while that part was in flight
    with caplog.at_level(logging.INFO, logger="data_prep.index"):
        again = embed_texts(texts, EncoderConfig(), progress=False, parts_dir=folder, part_rows=40)
    assert "80 of 120 rows already in" in caplog.text and len(list(folder.glob("part-*.parquet"))) == 3
    np.testing.assert_allclose(again, first, atol=1e-5)
