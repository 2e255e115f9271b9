"""Compute the branch scores of one stage once, and reuse them while their inputs are unchanged."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus, Stage
from data_prep.index import index_dir
from tune.branches import BranchScores, assemble, cf_topn, lastitem_topn, query_topn

log = logging.getLogger(__name__)
TOP_N = 200
FORMAT = "v2: top-N lists + full score rows"  # part of the fingerprint: a new format recomputes


def _fingerprint(paths: ArtifactPaths, cf: str, retrieval: str, variant: str) -> str:
    files = [
        paths.split("train"),
        paths.model_dir(cf) / "config.json",
        index_dir(paths, variant) / "vectors.npy",
    ]
    if retrieval != "lastitem":
        files.append(paths.root / "user_queries.parquet")
    # paths relative to the artifacts root, so the same artifacts give the same name from any working directory
    stamp = [FORMAT]
    for f in files:
        name = f.relative_to(paths.root).as_posix()
        stamp.append(f"{name}:{f.stat().st_mtime_ns}" if f.exists() else f"{name}:absent")
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]


def branch_file(paths: ArtifactPaths, stage: Stage, cf: str, retrieval: str, variant: str) -> Path:
    """Where the branch scores of this combination live; the name fingerprints their inputs."""
    fp = _fingerprint(paths, cf, retrieval, variant)
    return paths.root / "branches" / f"{stage}_{cf}_{retrieval.replace('+', '-')}_{variant}_{fp}.npz"


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
    from tune.training import train_or_load

    model = train_or_load(paths, cf, cf_overrides)
    vec_path = index_dir(paths, variant) / "vectors.npy"
    if not vec_path.is_file():
        raise FileNotFoundError(f"{vec_path}: run `python -m data_prep.index --text {variant}` first")
    path = branch_file(paths, stage, cf, retrieval, variant)
    if path.is_file():
        return BranchScores.load(path)
    cf_part = cf_topn(model, corpus, stage, n)
    if retrieval == "lastitem":
        ret_part = lastitem_topn(np.load(vec_path), corpus, stage, n)
    else:
        from actors.encoder import TextEncoder
        from actors.prompts import metadata_text
        from actors.retrieval_branch import QueryRetrievalBranch, RetrievalBranchConfig
        from actors.retriever import FaissRetriever

        qpath = paths.root / "user_queries.parquet"
        if not qpath.is_file():
            raise FileNotFoundError(f"{qpath}: run `python -m data_prep.queries` first")
        texts = [metadata_text(r) for r in corpus.items.to_dict("records")]
        branch = QueryRetrievalBranch(TextEncoder(), FaissRetriever.load(index_dir(paths, variant)), texts,
                                      RetrievalBranchConfig(n=n, with_last_item=retrieval == "llm+lastitem"))  # fmt: skip
        ret_part = query_topn(branch, corpus, stage, pd.read_parquet(qpath), n)
    scores = assemble(corpus, stage, cf_part, ret_part)
    scores.save(path)
    return scores
