"""Compute the branch scores of one stage once, and reuse them while their inputs are unchanged.

The retrieval side is built from the query parts (``actors.retrieval_query``): the metadata vectors
(``index/metadata``), the enriched descriptions' vectors when ``index/description`` exists, and the users'
LLM queries when ``user_queries.parquet`` exists. Where a trial can score every item for every user
(``actors.branch``'s full-row mode by catalog size, and at most ``TRIAL_BUDGET`` multiply-adds) the scores
keep ``RetrievalParts``, so the fusion search tunes the retrieval weights; above that, the retrieval answer
is searched once, with FAISS, for the given weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.branch import default_row_mode
from actors.retrieval_query import QueryParts, RetrievalWeights, text_directions
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json
from data_prep.corpus import Corpus, Stage
from tune.branches import BranchScores, RetrievalParts

log = logging.getLogger(__name__)
TOP_N = 200
TRIAL_BUDGET = 5e10  # multiply-adds of one trial's retrieval scores (users x items x dim): about 1 s here
# part of the fingerprint: a new format recomputes
FORMAT = "v4: BranchOutput + retrieval query parts (last, recent, LLM queries) and item vectors"


def query_texts(paths: ArtifactPaths, corpus: Corpus, stage: Stage) -> list[list[str]] | None:
    """Each evaluable user's LLM query texts for ``stage`` (the query and any extra samples), or None when
    no queries were written. A user without a query is an error naming the job to run."""
    qpath = paths.user_queries
    if not qpath.is_file():
        return None
    q = pd.read_parquet(qpath)
    q = q[q["stage"] == stage].set_index("user_id")
    users = corpus.user_ids[corpus.eval_users(stage)]
    missing = [u for u in users if u not in q.index]
    if missing:
        raise ValueError(
            f"{len(missing)} {stage} users have no query (e.g. {missing[:3]}); run data_prep.queries"
        )
    if "queries" not in q.columns:  # written before several queries per user
        return [[str(t)] for t in q.loc[users, "query"]]
    return [[str(t) for t in texts] for texts in q.loc[users, "queries"]]


def llm_directions(texts: Sequence[Sequence[str]]) -> np.ndarray:
    """(n_users, d): each user's LLM query direction (``actors.retrieval_query.text_directions``)."""
    from actors.encoder import TextEncoder

    encoder = TextEncoder()
    return text_directions(texts, encoder.encode, encoder.dim)


def tunable(corpus: Corpus, stage: Stage, dim: int) -> bool:
    """Whether a search trial may score every item for every user of ``stage`` (full-row catalogs, within
    ``TRIAL_BUDGET``), so the retrieval weights are tuned."""
    work = len(corpus.eval_users(stage)) * corpus.n_items * dim
    return default_row_mode(corpus.n_items) == "full" and work <= TRIAL_BUDGET


def _inputs(paths: ArtifactPaths, cf: str) -> list[Any]:
    """The branches' inputs by content: the training split, the trained model and its item index (if any),
    the item vectors and the metadata index's kind, the LLM queries, plus the cache format."""
    info = paths.index_dir("metadata") / "index.json"
    return [FORMAT, paths.split("train"), paths.model_dir(cf) / "config.json",
            paths.model_dir(cf) / "index" / "index.json", paths.item_vectors("metadata"),
            read_json(info)["config"] if info.is_file() else None, paths.item_vectors("description"),
            paths.user_queries]  # fmt: skip


def branch_file(
    paths: ArtifactPaths, stage: Stage, cf: str, weights: RetrievalWeights, corpus: Corpus
) -> Path:
    """Where the branch scores of (stage, cf) live: the name fingerprints their inputs, and where the part
    rows do not fit (one retrieval answer only), the weights."""
    dim = int(np.load(paths.item_vectors("metadata"), mmap_mode="r").shape[1])
    fixed = None if tunable(corpus, stage, dim) else asdict(weights)
    fp = fingerprint(*_inputs(paths, cf), fixed, length=12)
    return paths.branches / f"{stage}_{cf}_{'parts' if fixed is None else 'fixed'}_{fp}.npz"


def load_or_compute(
    paths: ArtifactPaths,
    corpus: Corpus,
    stage: Stage,
    cf: str,
    weights: RetrievalWeights | None = None,
    n: int = TOP_N,
    cf_overrides: dict[str, Any] | None = None,
) -> BranchScores:
    """Top-``n`` of both branches for every evaluable user of ``stage``, the retrieval side for ``weights``
    (default: the last item's vector alone), with the query parts where a trial may use them (CF config
    overridden by ``cf_overrides``, as ``data_prep.train --set`` trained it)."""
    from data_prep.train import load_trained

    weights = weights or RetrievalWeights()
    model = load_trained(paths, cf, cf_overrides)
    path = branch_file(paths, stage, cf, weights, corpus)
    if path.is_file():
        return BranchScores.load(path).with_weights(weights)
    scores = compute(paths, corpus, stage, model, weights, n)
    scores.save(path)
    return scores


def compute(
    paths: ArtifactPaths,
    corpus: Corpus,
    stage: Stage,
    model,
    weights: RetrievalWeights,
    n: int = TOP_N,
    users: np.ndarray | None = None,
) -> BranchScores:
    """Both branches of ``stage`` for ``users`` (default: every evaluable one) with a loaded CF model, the
    retrieval side for ``weights``; nothing cached. ``users`` are indices into the stage's evaluable users."""
    meta_path, desc_path = paths.item_vectors("metadata"), paths.item_vectors("description")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: run `python -m data_prep.index --text metadata` first")
    if weights.enriched and not desc_path.is_file():
        raise FileNotFoundError(f"{desc_path}: the enriched weight needs `python -m data_prep.index --text "
                                "description` (after data_prep.enrich)")  # fmt: skip
    everyone = corpus.eval_users(stage)
    rows = np.arange(len(everyone)) if users is None else np.asarray(users, dtype=np.int64)
    histories = corpus.histories(stage, everyone[rows])
    texts = query_texts(paths, corpus, stage)
    if weights.llm and texts is None:
        raise FileNotFoundError(
            f"{paths.user_queries}: the llm weight needs `python -m data_prep.queries` first"
        )
    metadata = np.load(meta_path)
    description = np.load(desc_path) if desc_path.is_file() else None
    llm = llm_directions([texts[r] for r in rows]) if texts is not None else None
    parts = QueryParts.build(metadata, histories, llm)
    rows_mode = default_row_mode(corpus.n_items)
    cf_part = model.rank(histories, n, rows=rows_mode)
    kept = None
    if tunable(corpus, stage, metadata.shape[1]):
        kept = RetrievalParts.build(parts, metadata, description, histories)
        ret_part = kept.output(weights, n)
    else:
        log.info("%s: %d users x %d items: too large to score every item per trial; one retrieval answer, "
                 "for %s", stage, len(rows), corpus.n_items, weights)  # fmt: skip
        ret_part = fixed_retrieval(paths, metadata, description, weights).search(
            parts.vectors(weights), n, exclude=histories, rows=rows_mode
        )
    hist_len = np.array([len(h) for h in histories])
    return BranchScores(everyone[rows], corpus.target(stage)[everyone[rows]], hist_len, cf_part, ret_part, weights,
                        kept)  # fmt: skip


def fixed_retrieval(paths: ArtifactPaths, metadata: np.ndarray, description: np.ndarray | None,
                    weights: RetrievalWeights):  # fmt: skip
    """The retriever over the item vectors of ``weights``: the metadata index as built, or (with an
    enriched weight) a new index over metadata + enriched x description."""
    from actors.retrieval_query import item_vectors
    from actors.retriever import FaissRetriever, IndexConfig

    if not weights.enriched:  # the index's vectors are ``metadata``, already in memory
        return FaissRetriever.load(paths.index_dir("metadata"), metadata)
    config = replace(
        IndexConfig(**read_json(paths.index_dir("metadata") / "index.json")["config"]), ivf_nprobe=0
    )
    vectors = item_vectors(metadata, description, weights.enriched)
    return FaissRetriever.build(vectors, np.arange(len(vectors)).astype(str), config)
