"""Compute the branch scores of one stage once, and reuse them while their inputs are unchanged.

The retrieval side is built from the query parts (``actors.retrieval_query``): the metadata vectors
(``index/metadata``), the enriched descriptions' vectors when ``index/description`` exists, and the users'
LLM queries when ``user_queries.parquet`` exists. Where a trial can score every item for every user
(``actors.branch``'s full-row mode by catalog size, and at most ``TRIAL_BUDGET`` multiply-adds) the scores
keep ``RetrievalParts``; above that they keep ``RetrievalCandidates`` (``tune.candidates``: per user, a fixed
candidate set from FAISS and each query part's score for it). Either way a trial gets the retrieval answer
for any weights, and the fusion search tunes them at any catalog size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.branch import default_row_mode
from actors.retrieval_query import QueryParts, RetrievalWeights, text_directions
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json
from data_prep.corpus import Corpus, Stage
from tune.branches import BranchScores
from tune.candidates import RetrievalCandidates
from tune.retrieval_parts import RetrievalParts

log = logging.getLogger(__name__)
TOP_N = 200
TRIAL_BUDGET = 5e10  # multiply-adds of one trial's retrieval scores (users x items x dim): about 1 s here
# part of the fingerprint: a new format recomputes
FORMAT = "v5: BranchOutput + retrieval query parts or candidates, and the items unseen in training"


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
    return [[str(t) for t in texts] for texts in q.loc[users, "queries"]]


def llm_directions(texts: Sequence[Sequence[str]]) -> np.ndarray:
    """(n_users, d): each user's LLM query direction (``actors.retrieval_query.text_directions``)."""
    from actors.encoder import TextEncoder

    encoder = TextEncoder()
    return text_directions(texts, encoder.encode, encoder.dim)


def tunable(corpus: Corpus, stage: Stage, dim: int) -> bool:
    """Whether a search trial may score every item for every user of ``stage`` (full-row catalogs, within
    ``TRIAL_BUDGET``); above that, trials score each user's candidates (``tune.candidates``)."""
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


def branch_file(paths: ArtifactPaths, stage: Stage, cf: str, corpus: Corpus) -> Path:
    """Where the branch scores of (stage, cf) live: the name fingerprints their inputs and says how trials
    score (``parts``: every item; ``cands``: each user's candidates)."""
    dim = int(np.load(paths.item_vectors("metadata"), mmap_mode="r").shape[1])
    kind = "parts" if tunable(corpus, stage, dim) else "cands"
    return paths.branches / f"{stage}_{cf}_{kind}_{fingerprint(*_inputs(paths, cf), length=12)}.npz"


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
    overridden by ``cf_overrides``, as ``q2rec train --set`` trained it)."""
    from training.cf import load_trained

    weights = weights or RetrievalWeights()
    model = load_trained(paths, cf, cf_overrides)
    path = branch_file(paths, stage, cf, corpus)
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
    candidates: bool = False,
) -> BranchScores:
    """Both branches of ``stage`` for ``users`` (default: every evaluable one) with a loaded CF model, the
    retrieval side for ``weights``; nothing cached. ``users`` are indices into the stage's evaluable users."""
    meta_path, desc_path = paths.item_vectors("metadata"), paths.item_vectors("description")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: run `q2rec index --text metadata` first")
    if weights.enriched and not desc_path.is_file():
        raise FileNotFoundError(f"{desc_path}: the enriched weight needs `q2rec index --text "
                                "description` (after data_prep.enrich)")  # fmt: skip
    everyone = corpus.eval_users(stage)
    rows = np.arange(len(everyone)) if users is None else np.asarray(users, dtype=np.int64)
    histories = corpus.histories(stage, everyone[rows])
    texts = query_texts(paths, corpus, stage)
    if weights.llm and texts is None:
        raise FileNotFoundError(f"{paths.user_queries}: the llm weight needs `q2rec queries` first")
    metadata = np.load(meta_path)
    description = np.load(desc_path) if desc_path.is_file() else None
    llm = llm_directions([texts[r] for r in rows]) if texts is not None else None
    parts = QueryParts.build(metadata, histories, llm)
    rows_mode = default_row_mode(corpus.n_items)
    cf_part = model.rank(histories, n, rows=rows_mode)
    hist_len = np.array([len(h) for h in histories])
    unseen = corpus.item_popularity() == 0  # items CF never saw in training
    if tunable(corpus, stage, metadata.shape[1]) and not candidates:
        kept = RetrievalParts.build(parts, metadata, description, histories)
        return BranchScores(everyone[rows], corpus.target(stage)[everyone[rows]], hist_len, cf_part,
                            kept.output(weights, n), weights, kept, unseen=unseen)  # fmt: skip
    log.info("%s: %d users x %d items: too large to score every item per trial; each trial scores a fixed "
             "candidate set per user (tune.candidates)", stage, len(rows), corpus.n_items)  # fmt: skip
    full = rows_mode == "full"
    cands = RetrievalCandidates.build(
        parts, histories, index_for(paths, "metadata", metadata),
        None if description is None else index_for(paths, "description", description), n,
        cf=cf_part if full else None,
        moments=RetrievalParts.build(parts, metadata, description, histories) if full else None,
    )  # fmt: skip
    cf_kept = cf_part.with_rows("stats") if full else cf_part  # trials use the candidates' CF rows
    return BranchScores.from_candidates(everyone[rows], corpus.target(stage)[everyone[rows]], hist_len,
                                        cf_kept, cands, weights, n, unseen)  # fmt: skip


def index_for(paths: ArtifactPaths, variant: str, vectors: np.ndarray):
    """The FAISS retriever ``data_prep.index`` built over ``vectors`` (``variant``: metadata or description),
    or a new one with the metadata index's config where it was not built."""
    from actors.retriever import FaissRetriever, IndexConfig

    if (paths.index_dir(variant) / "faiss.index").is_file():
        return FaissRetriever.load(paths.index_dir(variant), vectors)
    config = IndexConfig(**read_json(paths.index_dir("metadata") / "index.json")["config"])
    return FaissRetriever.build(vectors, np.arange(len(vectors)).astype(str), replace(config, ivf_nprobe=0))
