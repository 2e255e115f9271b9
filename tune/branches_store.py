"""Compute the branch scores of one stage once, and reuse them while their inputs are unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from actors.branch import default_row_mode
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json
from data_prep.corpus import Corpus, Stage
from tune.branches import BranchScores, assemble, cf_topn, lastitem_topn, query_topn

log = logging.getLogger(__name__)
TOP_N = 200
FORMAT = (
    "v3: BranchOutput (top-N lists + full score rows)"  # part of the fingerprint: a new format recomputes
)


def _fingerprint(paths: ArtifactPaths, cf: str, retrieval: str, variant: str) -> str:
    """The branches' inputs by content: the training split, the trained model, the item vectors and the
    index kind, (for a query branch) the user queries, plus the cache format."""
    info = paths.index_dir(variant) / "index.json"
    inputs = [paths.split("train"), paths.model_dir(cf) / "config.json", paths.item_vectors(variant),
              read_json(info)["config"] if info.is_file() else None]  # fmt: skip
    if retrieval != "lastitem":
        inputs.append(paths.user_queries)
    return fingerprint(FORMAT, *inputs, length=12)


def branch_file(paths: ArtifactPaths, stage: Stage, cf: str, retrieval: str, variant: str) -> Path:
    """Where the branch scores of this combination live; the name fingerprints their inputs."""
    fp = _fingerprint(paths, cf, retrieval, variant)
    return paths.branches / f"{stage}_{cf}_{retrieval.replace('+', '-')}_{variant}_{fp}.npz"


def load_or_compute(
    paths: ArtifactPaths,
    corpus: Corpus,
    stage: Stage,
    cf: str,
    retrieval: str,
    variant: str,
    n: int = TOP_N,
    cf_overrides: dict[str, Any] | None = None,
) -> BranchScores:
    """Top-``n`` of both branches for every evaluable user of ``stage`` (CF config overridden by ``cf_overrides``)."""
    from actors.retriever import FaissRetriever
    from data_prep.train import load_trained

    model = load_trained(paths, cf, cf_overrides)
    vec_path = paths.item_vectors(variant)
    if not vec_path.is_file():
        raise FileNotFoundError(f"{vec_path}: run `python -m data_prep.index --text {variant}` first")
    path = branch_file(paths, stage, cf, retrieval, variant)
    if path.is_file():
        return BranchScores.load(path)
    rows = default_row_mode(corpus.n_items)  # full rows where they fit; else the index's own top-N
    retriever = FaissRetriever.load(paths.index_dir(variant))
    cf_part = cf_topn(model, corpus, stage, n, rows)
    if retrieval == "lastitem":
        ret_part = lastitem_topn(retriever, corpus, stage, n, rows)
    else:
        from actors.encoder import TextEncoder
        from actors.prompts import metadata_text
        from actors.retrieval_branch import QueryRetrievalBranch, RetrievalBranchConfig

        qpath = paths.user_queries
        if not qpath.is_file():
            raise FileNotFoundError(f"{qpath}: run `python -m data_prep.queries` first")
        texts = [metadata_text(r) for r in corpus.items.to_dict("records")]
        branch = QueryRetrievalBranch(TextEncoder(), retriever, texts,
                                      RetrievalBranchConfig(n=n, with_last_item=retrieval == "llm+lastitem"))  # fmt: skip
        ret_part = query_topn(branch, corpus, stage, pd.read_parquet(qpath), n, rows)
    scores = assemble(corpus, stage, cf_part, ret_part)
    scores.save(path)
    return scores
