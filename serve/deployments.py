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
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from ray import serve

from actors.branch import BranchOutput
from serve.config import ServeAppConfig

log = logging.getLogger("ray.serve")


class VersionMismatch(RuntimeError):
    """A branch request made for another build than this replica's (``serve.state.serving_version``): during
    a rollout, old and new replicas answer side by side, and an answer may never fuse two builds."""


@dataclass(frozen=True)
class CFRequest:
    history: list[int]  # item indices, oldest first
    exclude: list[int]  # never listed
    n: int  # items wanted
    version: str | None = None  # the build the ingress serves (None: any)


@dataclass(frozen=True)
class RetrievalRequest:
    history: list[int]  # item indices, oldest first: the query's history parts come from them
    texts: list[str]  # the user's LLM query texts (the query and its extra samples); may be empty
    intent: str | None  # a free-text intent, blended into the query
    exclude: list[int]  # never listed
    n: int
    catalog_seq: int = 0  # the catalog log position the ingress answers at: later additions are left out
    version: str | None = None  # the build the ingress serves (None: any)


def check_version(request: CFRequest | RetrievalRequest, version: str) -> None:
    if request.version is not None and request.version != version:
        raise VersionMismatch(f"a request for build {request.version} reached a replica of build {version}")


@dataclass(frozen=True)
class BranchRef:
    """A branch deployment that is the only deployment of an application of its own (``serve.rollout``
    deploys each build's branches that way, so two builds' branches can run side by side)."""

    app: str
    deployment: str


def branch_handle(branch: Any) -> Any:
    """The handle of a bound branch (a handle already) or of a ``BranchRef``."""
    return (
        serve.get_deployment_handle(branch.deployment, app_name=branch.app)
        if isinstance(branch, BranchRef)
        else branch
    )


def split_batch(out: BranchOutput, ns: list[int]) -> list[BranchOutput]:
    """One ``BranchOutput`` per request of a batch answered together with the largest n."""
    return [out.take([i]).head(n) for i, n in enumerate(ns)]


@serve.deployment
class QueryDeployment:
    """The LLM of the app, one engine per replica: it writes user queries and describes items added online
    (the offline enrichment's recipe). ``vllm.LLM`` is not thread-safe, so every call runs on the replica's
    single engine thread, one batch at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import pandas as pd

        from actors.enricher import CatalogEnricher, EnrichmentSettings
        from actors.prompts import ItemPrompt, infer_domain
        from actors.user_query import QuerySettings, UserQueryWriter
        from data_prep.artifacts import ArtifactPaths

        cfg = ServeAppConfig(**config)
        domain = infer_domain(pd.read_parquet(ArtifactPaths(cfg.root).items).columns)
        engine = self._engine(cfg)
        self.writer = UserQueryWriter(engine, QuerySettings(domain=domain, samples=cfg.query_samples))
        self.enricher = (
            CatalogEnricher(engine, EnrichmentSettings(prompt=ItemPrompt(domain=domain)))
            if engine is not None
            else None
        )
        self.engine_thread = ThreadPoolExecutor(1, thread_name_prefix="llm-engine")
        self.generated = 0
        self.batches = 0
        self.described = 0

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
        loop = asyncio.get_running_loop()
        queries = await loop.run_in_executor(self.engine_thread, self.writer.write, histories)
        self.generated += len(histories)
        self.batches += 1
        return [asdict(q) for q in queries]

    async def describe(self, rows: list[dict]) -> dict[str, dict]:
        """LLM descriptions of catalog rows (items added online): ``{item_id: {"description", "source"}}``,
        validated and retried as offline (``CatalogEnricher``), a metadata-built fallback when both fail."""
        from actors.prompts import ItemRecord

        if self.enricher is None:
            raise RuntimeError("this app's engine is none: there is no LLM to describe items with")
        items = [ItemRecord.from_mapping(r) for r in rows]
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.engine_thread, self.enricher.enrich, items)
        self.described += len(out)
        return {e.item_id: {"description": e.description, "source": e.source} for e in out}

    def stats(self) -> dict[str, Any]:
        return {"generated": self.generated, "batches": self.batches, "described": self.described,
                "llm": self.writer.engine is not None}  # fmt: skip


@serve.deployment
class RetrievalDeployment:
    """Text encoder + FAISS over the whole catalog, the query built from its weighted parts (``fusion.json``'s
    retrieval weights). Query vectors are cached by text; the stored user queries are encoded at start, so a
    cached query costs no encoder call.

    Items added online (the store's catalog log) are embedded with the offline recipe (``metadata_text``
    through the same encoder) into a side index (``GrowingRetriever``). A replica applies the whole log
    before it reports ready, and a request carrying a later log position than the replica's makes it read
    the rest first; items added after a request's position are left out of its answer, so the ingress is
    never handed an item it does not know yet."""

    async def __init__(self, config: dict[str, Any]) -> None:
        from actors.encoder import TextEncoder
        from actors.retrieval_branch import QueryRetrievalBranch
        from actors.retrieval_query import item_vectors
        from actors.retriever import FaissRetriever, GrowingRetriever
        from data_prep.artifacts import ArtifactPaths
        from serve.state import LRU, load_fusion, serving_version
        from serve.store import open_store

        cfg = ServeAppConfig(**config)
        paths = ArtifactPaths(cfg.root)
        weights = load_fusion(cfg).weights
        metadata = FaissRetriever.load(paths.index_dir("metadata"))
        retriever = metadata
        if weights.enriched:  # the item vectors of this weight: an index of their own, built here
            description = np.load(paths.item_vectors("description"))
            t0 = time.perf_counter()
            vectors = item_vectors(metadata.vectors, description, weights.enriched)
            retriever = FaissRetriever.build(
                vectors, metadata.item_ids, replace(metadata.config, ivf_nprobe=0)
            )
            log.info("retrieval: index of metadata + %.2f x description built in %.1fs", weights.enriched,
                     time.perf_counter() - t0)  # fmt: skip
        self.encoder = TextEncoder()
        self.vectors = LRU(max(cfg.query_cache_size, 1))
        self.intent_vectors = LRU(cfg.intent_cache_size)  # bounded apart: one-off intents evict only intents
        self.metadata = metadata.vectors
        self.enriched = weights.enriched
        self.added_metadata = np.zeros((0, metadata.dim), dtype=np.float32)  # of the items added online
        self.retriever = GrowingRetriever(retriever)
        self.branch = QueryRetrievalBranch(
            self._encode, metadata.vectors, self.retriever, weights, cfg.intent_weight,
            encode_intent=lambda texts: self._encode(texts, self.intent_vectors),
        )  # fmt: skip
        self.store = open_store(cfg.store, cfg.root, cfg.query_cache_size)
        self.catalog_seq = 0
        self.catalog_lock = asyncio.Lock()
        self._known_ids: set[str] | None = None  # the catalog's ids, made at the first addition
        await self._catch_up(None)
        self.rows = cfg.rows_for(retriever.size)
        self.version = serving_version(cfg)
        self._score.set_max_batch_size(cfg.branch_batch_size)
        t0 = time.perf_counter()
        warm = self._stored_texts(paths) if weights.llm else []
        self._encode(warm)
        self.branch.search(
            [np.array([0])], [["warm-up"]], ["warm-up"], n=10, rows=self.rows
        )  # sets things up
        log.info("retrieval: %d query vectors encoded at start in %.1fs", len(warm), time.perf_counter() - t0)

    async def _catch_up(self, wanted: int | None) -> None:
        """Apply the catalog log up to its head (``wanted``: only when this replica is behind it). A store
        that does not answer leaves the replica where it is (the request is answered without the items it
        has not read).

        An added item's vector is the offline recipe's: its metadata text's, plus (with an ``enriched``
        weight) that weight times its description's: the metadata-built fallback description at once, the
        LLM's when its ``describe`` lands (``serve.api``'s background enrichment)."""
        from actors.retriever import StackedRows
        from serve.store import StoreUnavailable

        async with self.catalog_lock:
            if wanted is not None and wanted <= self.catalog_seq:
                return
            try:
                changes = await self.store.catalog_changes(self.catalog_seq)
            except StoreUnavailable as exc:
                log.warning("retrieval: catalog log not read: %s", exc)
                return
            adds = [c for c in changes if c.op == "add"]
            if adds:  # an addition folded into the catalog since (serve.fold_items) is there already
                if self._known_ids is None:
                    self._known_ids = set(self.retriever.item_ids.tolist())
                adds = [c for c in adds if c.item_id not in self._known_ids]
                self._known_ids.update(c.item_id for c in adds)
            t0 = time.perf_counter()
            for start in range(0, len(adds), 256):
                chunk = adds[start : start + 256]
                meta, vectors = self._added_vectors([c.row or {} for c in chunk])
                self.retriever.add(vectors, [c.item_id for c in chunk], [c.seq for c in chunk])
                self.added_metadata = np.concatenate([self.added_metadata, meta])
            if adds:  # the query parts of a history with added items: their metadata vectors
                self.branch.metadata = StackedRows(self.metadata, self.added_metadata)
                log.info(
                    "retrieval: %d items added online embedded in %.2fs", len(adds), time.perf_counter() - t0
                )
            self._apply_descriptions(changes)
            if changes:
                self.catalog_seq = changes[-1].seq

    def _apply_descriptions(self, changes: list) -> None:
        """Re-embed the added items whose LLM description is among ``changes`` (with an ``enriched`` weight;
        without one, descriptions do not enter the vectors)."""
        described = {c.item_id: c.row for c in changes if c.op == "describe"}
        if not (described and self.enriched):
            return
        at = {iid: n for n, iid in enumerate(self.retriever.extra_ids)}
        ids = [i for i in described if i in at]  # an item folded into the catalog keeps its indexed vector
        if not ids:
            return
        meta = self.added_metadata[[at[i] for i in ids]]
        texts = [str(described[i].get("description", "")) for i in ids]
        self.retriever.replace(ids, self._with_description(meta, texts))
        log.info("retrieval: %d LLM descriptions of items added online applied", len(ids))

    def _added_vectors(self, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(metadata vectors, index vectors) of catalog rows added online, before any LLM description:
        the index vector of an item whose enrichment fell back offline (``fallback_description``)."""
        from actors.prompts import ItemRecord, fallback_description, metadata_text

        meta = self.encoder.encode([metadata_text(r) for r in rows])
        if not self.enriched:
            return meta, meta
        fallback = [fallback_description(ItemRecord.from_mapping(r)) for r in rows]
        return meta, self._with_description(meta, fallback)

    def _with_description(self, meta: np.ndarray, descriptions: list[str]) -> np.ndarray:
        from actors.retrieval_query import item_vectors

        return item_vectors(meta, self.encoder.encode(descriptions), self.enriched)

    @staticmethod
    def _stored_texts(paths) -> list[str]:
        """The texts of the stored test-stage queries (the ones served for known users)."""
        import pandas as pd

        qpath = paths.user_queries
        if not qpath.is_file():
            return []
        q = pd.read_parquet(qpath)
        q = q[q["stage"] == "test"]
        texts = q["queries"]
        return [str(t) for ts in texts for t in ts]

    def _encode(self, texts: list[str], cache: dict | None = None) -> np.ndarray:
        """Unit vectors of ``texts``, encoding only those not in ``cache`` (default: the query vectors')."""
        cache = self.vectors if cache is None else cache
        got = {t: cache[t] for t in texts if t in cache}
        todo = list(dict.fromkeys(t for t in texts if t not in got))
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            for t, v in zip(chunk, self.encoder.encode(chunk), strict=True):
                cache.put(t, v)
                got[t] = v
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([got[t] for t in texts])

    async def score(self, request: RetrievalRequest) -> BranchOutput:
        """The request's top-n (``_score``), when it was made for this replica's build."""
        check_version(request, self.version)
        return await self._score(request)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _score(self, requests: list[RetrievalRequest]) -> list[BranchOutput]:
        """Each request's weighted query searched over the whole catalog (``QueryRetrievalBranch.search``)."""
        ns = [r.n for r in requests]
        wanted = max(r.catalog_seq for r in requests)
        if wanted > self.catalog_seq:
            await self._catch_up(wanted)
        exclude = [np.asarray(r.exclude, dtype=np.int64) for r in requests]
        if self.retriever.added_after(min(r.catalog_seq for r in requests)).size:  # newer than a request
            exclude = [
                np.union1d(e, self.retriever.added_after(r.catalog_seq))
                for e, r in zip(exclude, requests, strict=True)
            ]
        out = self.branch.search(
            [np.asarray(r.history, dtype=np.int64) for r in requests], [r.texts for r in requests],
            [r.intent for r in requests], n=max(ns), rows=self.rows, exclude=exclude,
        )  # fmt: skip
        return split_batch(out, ns)


@serve.deployment
class CFDeployment:
    """A trained CF model (SASRec, EASE, …) ranking the whole catalog for a batch of histories: by scoring
    every item, or, for a model saved with an item index (SASRec above 100,000 items), by searching it."""

    def __init__(self, config: dict[str, Any]) -> None:
        from actors.cf import model_class
        from data_prep.artifacts import ArtifactPaths
        from serve.state import serving_version

        cfg = ServeAppConfig(**config)
        folder = ArtifactPaths(cfg.root).model_dir(cfg.cf_model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: no trained {cfg.cf_model}; run `q2rec train --models {cfg.cf_model}` first"
            )
        self.model = model_class(cfg.cf_model).load(folder)
        if not self.model.index_is_current():
            log.warning("cf: %s over %d items is saved without the item index its config asks for (requests "
                        "then score the whole catalog); run `q2rec train --models %s`",
                        cfg.cf_model, self.model.n_items, cfg.cf_model)  # fmt: skip
        self.rows = cfg.rows_for(self.model.n_items)
        self.version = serving_version(cfg)
        self._score.set_max_batch_size(cfg.branch_batch_size)
        self.model.rank([np.array([0])], 10, rows=self.rows)  # the first call pays for setting up

    async def score(self, request: CFRequest) -> BranchOutput:
        """The request's ranking (``_score``), when it was made for this replica's build."""
        check_version(request, self.version)
        return await self._score(request)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _score(self, requests: list[CFRequest]) -> list[BranchOutput]:
        """Each request's history ranked against the whole catalog (``CFModel.rank``)."""
        ns = [r.n for r in requests]
        out = self.model.rank([np.asarray(r.history, dtype=np.int64) for r in requests], max(ns),
                              exclude=[np.asarray(r.exclude, dtype=np.int64) for r in requests], rows=self.rows)  # fmt: skip
        return split_batch(out, ns)
