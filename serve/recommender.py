"""The recommend orchestration of the ingress, apart from HTTP: the serving state and the online store, the
user's history and query (one LLM generation per history, bounded), the two branches at once and their
fusion, the catalog log applied before each answer, the background descriptions of items added online, and
the counts and levels exported as metrics. ``serve.api`` translates HTTP to it and its errors back.

``POST /recommend`` resolves the user's history and query, calls the CF branch and the query→retrieval
branch concurrently (``serve.fan_out``), and fuses whatever answered with the tuned config through
``actors.rerank.fuse``, the function the offline evaluation uses. A branch that fails or is late is left
out and named in ``degraded``; only when both fail is there no answer (``NoBranchAnswered``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from actors.branch import BranchOutput
from actors.rerank import Fused, fuse
from actors.retrieval_query import RECENT_ITEMS
from actors.user_query import QuerySettings, UserQueryWriter
from serve.config import ServeAppConfig
from serve.deployments import CFRequest, RetrievalRequest
from serve.fan_out import BranchFanOut
from serve.metrics import MeteredCounts
from serve.schemas import RecommendRequest
from serve.state import LRU, ServingState, load_fusion, serving_version
from serve.store import Query as StoredQuery
from serve.store import StoreUnavailable, open_store

log = logging.getLogger("ray.serve")
RECENT = QuerySettings().recent  # history items a query is written from


class BadRequest(ValueError):
    """A request that cannot be answered as asked; the message names the field."""


class UnknownUser(LookupError):
    """A user id neither the trained histories nor the online store know."""


class NoBranchAnswered(RuntimeError):
    """Both branches failed or were late: there is nothing to fuse."""


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class Recommender:
    """What one ingress replica knows and does, behind its endpoints. ``query`` is the LLM deployment's
    handle; ``retrieval`` and ``cf`` are the branch handles."""

    def __init__(self, cfg: ServeAppConfig, query, retrieval, cf) -> None:
        self.cfg = cfg
        self.state = ServingState(cfg)
        self.store = open_store(cfg.store, cfg.root, cfg.query_cache_size)
        # each user's appended items as last read: served (marked degraded) while the store is down
        self.last_appended = LRU(100_000)
        self.fusion = load_fusion(cfg)
        self.version = serving_version(cfg)  # branch calls carry it: one build per answer
        self.fallback_writer = UserQueryWriter(None)
        self.query = query
        self.pending: dict[str, asyncio.Task] = {}
        self.pending_anonymous: set[str] = set()  # the keys in ``pending`` that no known user asked for
        self.counts = MeteredCounts()  # /healthz's counts, also exported as Prometheus metrics
        # the LLM writes queries only for a retrieval that uses them, and describes the items added online
        # only for one that weighs descriptions (in the background: the item is recommendable before)
        self.llm = cfg.engine.backend != "none" and self.fusion.weights.llm > 0
        self.describe_online = cfg.engine.backend != "none" and self.fusion.weights.enriched > 0
        self.describing: set[asyncio.Task] = set()
        self.catalog_lock = asyncio.Lock()
        self.branches = BranchFanOut(cf, retrieval, cfg.timeouts, self.counts)
        self.levels: asyncio.Task | None = None

    async def start(self) -> None:
        """Apply the catalog log (items added online before this replica started) and start exporting the
        levels: Ray drops a gauge value not set again within about 20 s, so they are re-set every few seconds."""
        await self.sync_catalog([])
        self.levels = asyncio.get_running_loop().create_task(self._report_levels())

    async def warm(self, timeout_s: float) -> list[str]:
        """Wait until both branches of this build answer (up to ``timeout_s``); the ones that did not."""
        probe = {
            "cf": CFRequest([0], [], 10, self.version),
            "retrieval": RetrievalRequest([0], ["warm-up"], "warm-up", [], 10, version=self.version),
        }
        return await self.branches.warm(probe, timeout_s)

    def describe_later(self, rows: list[dict]) -> None:
        """Have the LLM describe items just added, in the background (when the fusion weighs descriptions)."""
        if self.describe_online:
            task = asyncio.get_running_loop().create_task(self._describe(rows))
            self.describing.add(task)  # kept until done: the loop holds only weak references
            task.add_done_callback(self.describing.discard)

    def start_generation(self, key: str, history: list[int], anonymous: bool = False) -> asyncio.Task | None:
        """One generation per (user, history): concurrent requests share the running task. None (shed) when
        ``engine.max_pending`` generations are pending, or ``engine.max_pending_anonymous`` of them for
        histories without a user: a flood of cold-start requests never queues ahead of a known user's."""
        task = self.pending.get(key)
        if task is None:
            limits = self.cfg.engine
            if len(self.pending) >= limits.max_pending or (
                anonymous and len(self.pending_anonymous) >= limits.max_pending_anonymous
            ):
                self.counts["generation_shed"] += 1
                return None
            view = self.state.history_view(history[-RECENT:])
            task = asyncio.get_running_loop().create_task(self._generate(key, view))
            self.pending[key] = task
            if anonymous:
                self.pending_anonymous.add(key)
        return task

    async def _generate(self, key: str, view: list) -> StoredQuery:
        try:
            out = await self.query.write.remote(view)
            self.counts["generated"] += 1
            query = (tuple(out["texts"]), out["source"])
            self.state.queries.put(key, query)
            try:  # shared, so every replica finds it
                await self.store.put_query(key, query)
            except StoreUnavailable as exc:
                self.counts["store_failed"] += 1
                log.warning("query for %s kept in this replica only: %s", key, exc)
            return query
        except Exception as exc:  # the LLM replica failed: the next request tries again
            self.counts["generation_failed"] += 1
            log.warning("query generation failed for %s: %r", key, exc)
            raise
        finally:
            self.pending.pop(key, None)
            self.pending_anonymous.discard(key)

    async def _user_query(
        self, key: str, history: list[int], degraded: list[str], anonymous: bool
    ) -> tuple[tuple[str, ...], str, bool]:
        """The query texts for ``history`` cached under ``key``, or the metadata-built one while the LLM
        writes them; with the source and whether they were cached."""
        cached = self.state.queries.get(key)
        if cached is not None:
            return cached[0], cached[1], True
        fallback = (self.fallback_writer.fallback(self.state.history_view(history[-RECENT:])),)
        if not self.llm:  # without an LLM nothing is written online: the store holds no queries
            return fallback, "fallback", False
        try:
            cached = await self.store.get_query(key)
        except StoreUnavailable:
            self._store_failed(degraded)
        if cached is not None:
            self.state.queries.put(key, cached)
            return cached[0], cached[1], True
        task = self.start_generation(key, history, anonymous)
        if task is not None and self.cfg.timeouts.llm > 0:
            try:
                return (*await asyncio.wait_for(asyncio.shield(task), self.cfg.timeouts.llm), False)
            except Exception:  # late or failed: the metadata-built query serves
                pass
        degraded.append("llm")
        return fallback, "fallback", False

    def _store_failed(self, degraded: list[str]) -> None:
        self.counts["store_failed"] += 1
        if "store" not in degraded:
            degraded.append("store")

    async def sync_catalog(self, degraded: list[str]) -> None:
        """Apply the store's catalog log up to its head; while the store is down, the catalog as last read."""
        try:
            head = await self.store.catalog_head()
            if head > self.state.catalog_seq:
                async with self.catalog_lock:  # one reader applies; the others find it done
                    if head > self.state.catalog_seq:
                        self.state.apply(await self.store.catalog_changes(self.state.catalog_seq))
        except StoreUnavailable:
            self._store_failed(degraded)

    def pending_enrichment(self) -> int:
        return self.state.n_undescribed if self.describe_online else 0

    async def _report_levels(self, every_s: float = 5.0) -> None:
        """The exported gauges (``serve.metrics``), set every ``every_s`` while the replica lives."""
        while True:
            self.counts.gauge("items_pending_enrichment", self.pending_enrichment())
            self.counts.gauge("generations_pending", len(self.pending))
            await asyncio.sleep(every_s)

    async def _describe(self, rows: list[dict]) -> None:
        """The LLM descriptions of items just added, written to the catalog log: every retrieval replica
        then re-embeds them with the description, as the offline index does."""
        try:
            descriptions = await self.query.describe.remote(rows)
            await self.store.describe_items(descriptions)
            self.counts["items_described"] += len(descriptions)
        except Exception as exc:  # the item keeps its metadata-built vector and counts as pending
            self.counts["description_failed"] += len(rows)
            log.warning("descriptions of %d items added online not written: %r", len(rows), exc)

    async def history(self, user_id: str, degraded: list[str]) -> list[int] | None:
        """The user's history (None: unknown user), read from the store at every request so that every
        replica sees every event at once; while the store is down, as last read, and ``store`` is degraded."""
        try:
            appended = await self.store.appended(user_id)
        except StoreUnavailable:
            self._store_failed(degraded)
            if user_id not in self.state.histories and user_id not in self.last_appended:
                raise  # it may be a user that only the store knows
            appended = self.last_appended.get(user_id, [])
        else:
            if appended:
                self.last_appended.put(user_id, appended)
        return self.state.history(user_id, appended)

    async def recommend(self, body: RecommendRequest) -> dict[str, Any]:
        """The answer to ``POST /recommend``: the user's history (from the store) and query, both branches
        at once, their fusion; ``BadRequest``, ``UnknownUser``, ``UnknownItems``, ``StoreUnavailable`` or
        ``NoBranchAnswered`` when there is none."""
        t_start = time.perf_counter()
        st = self.state
        if (body.user_id is None) == (body.history is None):
            raise BadRequest("give exactly one of user_id (a known user) or history (item ids)")
        if not 1 <= body.k <= st.n_items:
            raise BadRequest(f"k: must be between 1 and {st.n_items} (the catalog size), got {body.k}")
        degraded: list[str] = []
        timings: dict[str, float] = {}
        t_catalog = time.perf_counter()
        await self.sync_catalog(degraded)
        timings["catalog"] = round((time.perf_counter() - t_catalog) * 1000, 2)
        if body.user_id is not None:
            t_store = time.perf_counter()
            full = await self.history(body.user_id, degraded)
            timings["store"] = round((time.perf_counter() - t_store) * 1000, 2)
            if full is None:
                raise UnknownUser(f"user_id: unknown user {body.user_id!r}")
            user_key = body.user_id
        else:
            full = st.resolve(body.history or [], "history")
            user_key = "anonymous"
        history = list(full[-self.cfg.max_history :])  # what the branches score
        intent = body.query.strip() if body.query and body.query.strip() else None
        if intent is not None and len(intent) > self.cfg.max_query_chars:
            raise BadRequest(f"query: at most {self.cfg.max_query_chars} characters, got {len(intent)}")
        if not history and intent is None:
            raise BadRequest("history: empty; give at least one item id, or a query")

        texts: tuple[str, ...] = ()
        source, cached = "none", False
        weights = self.fusion.weights
        if history and weights.llm:
            texts, source, cached = await self._user_query(
                st.key(user_key, full), history, degraded, anonymous=body.user_id is None
            )
        # the history items the query comes from: those the LLM saw, or those of the history parts
        parts = 1 + RECENT_ITEMS if weights.recent else 1 if weights.last else 0
        query_items = history[-RECENT:] if texts else history[-parts:] if parts else []
        # withdrawn items are never listed; items added online are unknown to CF (absent from its list)
        exclude = sorted((set(history) if body.exclude_seen else set()) | st.hidden)
        cf_history = [i for i in history if i < st.n_base]
        cfg = replace(self.fusion.config, n=max(self.fusion.config.n, body.k))
        n = max(self.cfg.branch_n or cfg.n, body.k)  # items asked of each branch
        if intent:  # an intent asks for the retrieval branch to count, however long the history
            cfg = replace(cfg, max_alpha=min(cfg.max_alpha, self.cfg.intent_max_alpha))
        cf_exclude = [i for i in exclude if i < st.n_base]
        cf_req = CFRequest(cf_history, cf_exclude, n, self.version) if cf_history else None
        ret_req = RetrievalRequest(history, list(texts), intent, exclude, n, st.catalog_seq, self.version)
        cf_out, ret_out = await self.branches.both(cf_req, ret_req, timings)
        if not cf_history:  # nothing to score from (no history, or only items CF never saw); not a failure
            degraded.append("cf")
        elif isinstance(cf_out, BranchOutput):
            cf_out = cf_out.widened(st.n_items)
        for name, res in (("cf", cf_out), ("retrieval", ret_out)):
            if isinstance(res, BaseException):
                degraded.append(name)
                self.counts[f"degraded_{name}"] += 1
        answered = [b if isinstance(b, BranchOutput) and b.n > 0 else None for b in (cf_out, ret_out)]
        items, alpha = [], None
        if answered != [None, None]:
            t_fuse = time.perf_counter()
            fused = fuse(*answered, np.array([len(history)]), cfg, body.k, self.state.unseen)
            items, alpha = self._items(fused), float(fused.alpha[0])
            timings["fuse"] = round((time.perf_counter() - t_fuse) * 1000, 2)
        elif {"cf", "retrieval"} & set(degraded):
            raise NoBranchAnswered(f"no branch answered: degraded {degraded}")
        timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        self.counts["recommend"] += 1
        for part in {"llm", "store"} & set(degraded):  # the branches' are counted where they fail
            self.counts[f"degraded_{part}"] += 1
        self.counts[f"query_{source}"] += 1
        if cached:
            self.counts["query_cached"] += 1
        self.counts.timings(timings)
        return {
            "user_id": body.user_id,
            "items": items,
            "query": {
                "text": texts[0] if texts else None,
                "texts": list(texts),
                "source": source,
                "cached": cached,
                "intent": intent,
                "items": [st.item_ids[i] for i in query_items],
            },
            "alpha": alpha,
            "degraded": degraded,
            "version": self.version,
            "timings_ms": timings,
        }

    def _items(self, f: Fused) -> list[dict[str, Any]]:
        """One user's fused list as response items, with each branch's rank and raw score (None: absent)."""
        st = self.state
        out = []
        for j in range(f.ids.shape[1]):
            i = int(f.ids[0, j])
            cr, rr = int(f.cf_rank[0, j]), int(f.retrieval_rank[0, j])
            out.append({
                "item_id": st.item_ids[i], "title": st.titles[i], "score": float(f.scores[0, j]),
                "cf_rank": cr or None, "cf_score": _finite(f.cf_score[0, j]) if cr else None,
                "retrieval_rank": rr or None, "retrieval_score": _finite(f.retrieval_score[0, j]) if rr else None,
            })  # fmt: skip
        return out
