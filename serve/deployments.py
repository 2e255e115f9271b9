"""The three branch deployments. Each wraps ``actors/`` code (which knows nothing of Serve) and batches
concurrent calls with ``@serve.batch``, so a burst of requests becomes one model call. The CF and retrieval
batches wait for nothing: a batch is whatever queued while the previous one ran, so a lone request never
waits for company.

Requests are small dataclasses of item indices (``CFRequest``, ``RetrievalRequest``), never texts of the
catalog. A branch answers each with a one-row ``BranchOutput``: its top-n, the request's ``exclude`` never
listed, plus the catalog-wide score row or its statistics as ``branch_rows`` says (the fusion normalises
over them, as the offline evaluation does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ray import serve

from actors.branch import BranchOutput
from serve.config import ServeAppConfig

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class CFRequest:
    history: list[int]  # item indices, oldest first
    exclude: list[int]  # never listed
    n: int  # items wanted


@dataclass(frozen=True)
class RetrievalRequest:
    texts: list[str]  # the user query, and a free-text intent when there is one
    weights: list[float]  # one per text: the query vector is their weighted, normalised sum
    history: list[int]  # its last item may be appended to the query text
    exclude: list[int]
    n: int
    last_item: float = 0.0  # weight of the last history item's own vector in that sum (``lastitem``)


def split_batch(out: BranchOutput, ns: list[int]) -> list[BranchOutput]:
    """One ``BranchOutput`` per request of a batch answered together with the largest n."""
    return [out.take([i]).head(n) for i, n in enumerate(ns)]


@serve.deployment
class QueryDeployment:
    """The user-query writer with one LLM engine per replica. ``vllm.LLM`` is not thread-safe, so every
    batch runs on the replica's single engine thread, one batch at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        import pandas as pd

        from actors.prompts import infer_domain
        from actors.user_query import QuerySettings, UserQueryWriter
        from data_prep.artifacts import ArtifactPaths

        cfg = ServeAppConfig(**config)
        domain = infer_domain(pd.read_parquet(ArtifactPaths(cfg.root).items).columns)
        self.writer = UserQueryWriter(self._engine(cfg), QuerySettings(domain=domain))
        self.generated = 0
        self.batches = 0

    @staticmethod
    def _engine(cfg: ServeAppConfig):
        if cfg.engine.backend == "none":
            return None
        from actors.llm.engine import EngineConfig
        from actors.llm.factory import make_engine

        e = cfg.engine
        return make_engine(EngineConfig(backend=e.backend, model=e.model, max_model_len=e.max_model_len,
                                        base_url=e.base_url, extra=e.extra))  # fmt: skip

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02)
    async def write(self, histories: list[list]) -> list[dict[str, Any]]:
        """One query per history (a list of ``HistoryItem``, oldest first)."""
        queries = await asyncio.to_thread(self.writer.write, histories)
        self.generated += len(histories)
        self.batches += 1
        return [asdict(q) for q in queries]

    def stats(self) -> dict[str, Any]:
        return {"generated": self.generated, "batches": self.batches, "llm": self.writer.engine is not None}


@serve.deployment
class RetrievalDeployment:
    """Text encoder + FAISS over the whole catalog. Query vectors are cached by text; the precomputed user
    queries are encoded at start, so a cached query costs one matrix product, not an encoder call."""

    def __init__(self, config: dict[str, Any]) -> None:
        import pandas as pd

        from actors.encoder import TextEncoder
        from actors.prompts import metadata_text
        from actors.retrieval_branch import QueryRetrievalBranch, RetrievalBranchConfig
        from actors.retriever import FaissRetriever
        from data_prep.artifacts import ArtifactPaths
        from serve.state import LRU, load_fusion

        cfg = ServeAppConfig(**config)
        paths = ArtifactPaths(cfg.root)
        items = pd.read_parquet(paths.items).to_dict("records")
        fusion = load_fusion(cfg)
        self.branch = QueryRetrievalBranch(
            TextEncoder(), FaissRetriever.load(paths.index_dir(fusion.variant)),
            [metadata_text(r) for r in items], RetrievalBranchConfig(with_last_item=fusion.with_last_item),
        )  # fmt: skip
        self.rows = cfg.rows_for(self.branch.retriever.size)
        self.score.set_max_batch_size(cfg.branch_batch_size)
        self.vectors = LRU(max(cfg.query_cache_size, 1))
        t0 = time.perf_counter()
        warm = self._precomputed_texts(paths) if fusion.retrieval != "lastitem" else []
        self._encode(warm)
        vec = self.branch.encoder.encode(["warm-up"])  # the first encode and search pay for setting up
        self.branch.retriever.search(np.asarray(vec, dtype=np.float32), 10, rows=self.rows)
        log.info("retrieval: %d query vectors encoded at start in %.1fs", len(warm), time.perf_counter() - t0)

    def _precomputed_texts(self, paths) -> list[str]:
        """The retrieval texts of the stored test-stage queries (the ones served for known users)."""
        import pandas as pd

        from data_prep.corpus import Corpus

        qpath = paths.user_queries
        if not qpath.is_file():
            return []
        corpus = Corpus.load(paths)
        q = pd.read_parquet(qpath)
        by_user = q[q["stage"] == "test"].set_index("user_id")["query"]
        users = corpus.eval_users("test")
        known = [(u, str(corpus.user_ids[u])) for u in users if str(corpus.user_ids[u]) in by_user.index]
        hist = corpus.histories("test", np.array([u for u, _ in known], dtype=np.int64))
        return self.branch.query_texts([str(by_user[uid]) for _, uid in known], hist)

    def _encode(self, texts: list[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            for t, v in zip(chunk, self.branch.encoder.encode(chunk), strict=True):
                self.vectors.put(t, v)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def score(self, requests: list[RetrievalRequest]) -> list[BranchOutput]:
        """Each request's weighted query vector searched over the whole catalog (``Retriever.search``)."""
        composed = [
            [self.branch.query_texts([t], [np.asarray(r.history, dtype=np.int64)])[0] for t in r.texts]
            for r in requests
        ]
        self._encode([t for texts in composed for t in texts])
        item_vectors = self.branch.retriever.vectors
        vecs = np.zeros((len(requests), self.branch.retriever.dim), dtype=np.float32)
        for i, (texts, r) in enumerate(zip(composed, requests, strict=True)):
            v = np.zeros_like(vecs[i])
            for t, w in zip(texts, r.weights, strict=True):
                v += w * self.vectors[t]
            if r.last_item and r.history:
                v += r.last_item * item_vectors[r.history[-1]]
            vecs[i] = v / max(float(np.linalg.norm(v)), 1e-12)
        excl = [np.asarray(r.exclude, dtype=np.int64) for r in requests]
        ns = [r.n for r in requests]
        out = self.branch.retriever.search(vecs, max(ns), exclude=excl, rows=self.rows)
        return split_batch(out, ns)


@serve.deployment
class CFDeployment:
    """A trained CF model (SASRec, EASE, …) scoring the whole catalog for a batch of histories."""

    def __init__(self, config: dict[str, Any]) -> None:
        from actors.cf import model_class
        from data_prep.artifacts import ArtifactPaths

        cfg = ServeAppConfig(**config)
        folder = ArtifactPaths(cfg.root).model_dir(cfg.cf_model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: no trained {cfg.cf_model}; run `python -m data_prep.train --models {cfg.cf_model}` first"
            )
        self.model = model_class(cfg.cf_model).load(folder)
        self.rows = cfg.rows_for(self.model.n_items)
        self.score.set_max_batch_size(cfg.branch_batch_size)
        self.model.rank([np.array([0])], 10, rows=self.rows)  # the first call pays for setting up

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def score(self, requests: list[CFRequest]) -> list[BranchOutput]:
        """Each request's history scored against the whole catalog (``CFModel.rank``)."""
        ns = [r.n for r in requests]
        out = self.model.rank([np.asarray(r.history, dtype=np.int64) for r in requests], max(ns),
                              exclude=[np.asarray(r.exclude, dtype=np.int64) for r in requests], rows=self.rows)  # fmt: skip
        return split_batch(out, ns)
