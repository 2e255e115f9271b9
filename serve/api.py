"""The HTTP ingress: FastAPI on the rerank deployment.

``POST /recommend`` resolves the user's history and query, calls the CF branch and the query→retrieval
branch concurrently (``serve.fan_out``), and fuses whatever answered with the tuned config through
``actors.rerank.fuse``, the function the offline evaluation uses. A branch that fails or is late is left
out and named in ``degraded``; only when both fail is the answer a 503. Bodies are in ``serve.schemas``.

``POST /items`` and ``DELETE /items/{id}`` change the catalog online, through the store's catalog log.
Every request reads the log's head first (one small store read), so an item added or withdrawn through
any replica counts in every replica's next answer; the retrieval call carries the position, so retrieval
replicas catch up before answering. CF does not know an added item until it is trained again: it is
absent from CF's list and row, and enters an answer only through retrieval.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import RayServeException
from swagger_ui_bundle import swagger_ui_path

from actors.branch import BranchOutput
from actors.rerank import Fused, fuse
from actors.retrieval_query import RECENT_ITEMS
from actors.user_query import QuerySettings
from serve.config import ServeAppConfig
from serve.deployments import BranchRef, CFRequest, RetrievalRequest, branch_handle
from serve.fan_out import BranchFanOut
from serve.metrics import MeteredCounts
from serve.middleware import BodyLimit, ReplicaHeader, configure, settings
from serve.schemas import (
    EventsRequest,
    EventsResponse,
    ItemsResponse,
    NewItemsRequest,
    NewItemsResponse,
    RecommendRequest,
    RecommendResponse,
    UserResponse,
    WithdrawnResponse,
    id_problem,
)
from serve.state import LRU, ServingState, UnknownItems, load_fusion, serving_version
from serve.store import ItemsExist, MemoryStore, StoreUnavailable, open_store
from serve.store import Query as StoredQuery

log = logging.getLogger("ray.serve")

app = FastAPI(
    title="q2rec",
    version="0.1.0",
    description="LLM-assisted recommendation: a personalized LLM query with retrieval over the whole "
    "catalog, fused with collaborative filtering per user.",
    docs_url=None,  # FastAPI's own pages load their scripts from a CDN: /docs below serves shipped files
    redoc_url=None,
)
app.add_middleware(BodyLimit)
app.add_middleware(ReplicaHeader)
app.mount("/docs-files", StaticFiles(directory=swagger_ui_path), name="docs-files")
RECENT = QuerySettings().recent  # history items a query is written from
# the page at GET /: one file, nothing fetched from outside
EXPLORER = Path(__file__).with_name("explorer.html")
MAX_LOOKUP_IDS = 100  # ids per GET /items?ids=
# the explorer page loads nothing from elsewhere and may not be framed
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _printable(value: object) -> str:
    """Text that always encodes as UTF-8: lone surrogates (from a JSON ``\\ud800``) are escaped."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and why, without echoing the input: FastAPI's own handler echoes it, and
    a NaN or a lone surrogate in it cannot be written as JSON (a 500)."""
    errors = [
        {"loc": [p if isinstance(p, int) else _printable(p) for p in e.get("loc", ())],
         "msg": _printable(e.get("msg", "")), "type": _printable(e.get("type", ""))}
        for e in exc.errors()
    ]  # fmt: skip

    def field(loc: list) -> str:  # body.history.1 -> history.1; the location's own name stays if alone
        inner = loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path", "header") else loc
        return ".".join(str(p) for p in inner) or "body"

    fields = "; ".join(f"{field(e['loc'])}: {e['msg']}" for e in errors[:5])
    return JSONResponse({"detail": errors, "message": fields}, 422)


@app.get("/docs", include_in_schema=False)
async def api_docs() -> HTMLResponse:
    """The OpenAPI page, from the files of the ``swagger-ui-bundle`` package (``api_docs: false``: 404)."""
    if not settings()["api_docs"]:
        raise HTTPException(404, "the API page is disabled (api_docs: false); /openapi.json has the schema")
    return get_swagger_ui_html(
        openapi_url=app.openapi_url, title="q2rec API", swagger_js_url="/docs-files/swagger-ui-bundle.js",
        swagger_css_url="/docs-files/swagger-ui.css", swagger_favicon_url="/docs-files/favicon-32x32.png",
    )  # fmt: skip


def _check_id(value: str, field: str) -> None:
    why = id_problem(value)
    if why is not None:
        raise HTTPException(422, f"{field}: {why}")


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _store_down(exc: StoreUnavailable) -> HTTPException:
    return HTTPException(503, {"store": exc.store, "message": str(exc)[:2000]})


def _unknown_items(exc: UnknownItems) -> HTTPException:
    return HTTPException(
        422, {"field": exc.field, "unknown_item_ids": exc.ids[:100], "message": str(exc)[:2000]}
    )


@serve.deployment
@serve.ingress(app)
class RerankDeployment:
    async def __init__(self, config: dict[str, Any], query, retrieval, cf) -> None:
        """Loads the serving state, then waits (up to ``timeouts.warmup``) until both branches answer within
        their budgets: Serve routes traffic to this replica only after that, so ready means warm. A branch is
        a bound deployment, or a ``BranchRef`` to a branch application of its own (``serve.rollout``)."""
        from actors.user_query import UserQueryWriter

        self.branch_refs = [b for b in (retrieval, cf) if isinstance(b, BranchRef)]
        retrieval, cf = branch_handle(retrieval), branch_handle(cf)

        self.cfg = ServeAppConfig(**config)
        self.cfg.check_auth()
        if self.cfg.auth == "none" and self.cfg.token() is None:
            log.warning("events need no token (auth: none): anyone who reaches this port can append to any "
                        "user's history; set events_token or $Q2REC_EVENTS_TOKEN unless this is 127.0.0.1")  # fmt: skip
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except RayServeException:  # the plain class, outside Serve
            replica = ""
        configure(self.cfg.max_body_bytes, replica, self.cfg.api_docs)
        self.state = ServingState(self.cfg)
        self.store = open_store(self.cfg.store, self.cfg.root, self.cfg.query_cache_size)
        # each user's appended items as last read: served (marked degraded) while the store is down
        self.last_appended = LRU(100_000)
        self.fusion = load_fusion(self.cfg)
        self.version = serving_version(self.cfg)  # branch calls carry it: one build per answer
        self.fallback_writer = UserQueryWriter(None)
        self.query = query
        self.pending: dict[str, asyncio.Task] = {}
        self.pending_anonymous: set[str] = set()  # the keys in ``pending`` that no known user asked for
        self.counts = MeteredCounts()  # /healthz's counts, also exported as Prometheus metrics
        # the LLM writes queries only for a retrieval that uses them, and describes the items added online
        # only for one that weighs descriptions (in the background: the item is recommendable before)
        self.llm = self.cfg.engine.backend != "none" and self.fusion.weights.llm > 0
        self.describe_online = self.cfg.engine.backend != "none" and self.fusion.weights.enriched > 0
        self.describing: set[asyncio.Task] = set()
        self.catalog_lock = asyncio.Lock()
        await self._sync_catalog([])  # items added online before this replica started
        # Ray drops a gauge value not set again within about 20 s: levels are re-set every few seconds
        self.levels = asyncio.get_running_loop().create_task(self._report_levels())
        self.branches = BranchFanOut(cf, retrieval, self.cfg.timeouts, self.counts)
        self.explorer_page = EXPLORER.read_text()
        if self.cfg.timeouts.warmup > 0:
            t0 = time.perf_counter()
            probe = {
                "cf": CFRequest([0], [], 10, self.version),  # ready only once this build's branches are
                "retrieval": RetrievalRequest([0], ["warm-up"], "warm-up", [], 10, version=self.version),
            }
            silent = await self.branches.warm(probe, self.cfg.timeouts.warmup)
            if silent:
                log.warning(
                    "taking traffic although %s did not answer within %.0fs", silent, self.cfg.timeouts.warmup
                )
            else:
                log.info("both branches answer, %.1fs after the ingress was loaded", time.perf_counter() - t0)

    # ---- query -------------------------------------------------------------------------------------
    def _start_generation(self, key: str, history: list[int], anonymous: bool = False) -> asyncio.Task | None:
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
        task = self._start_generation(key, history, anonymous)
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

    async def _sync_catalog(self, degraded: list[str]) -> None:
        """Apply the store's catalog log up to its head; while the store is down, the catalog as last read."""
        try:
            head = await self.store.catalog_head()
            if head > self.state.catalog_seq:
                async with self.catalog_lock:  # one reader applies; the others find it done
                    if head > self.state.catalog_seq:
                        self.state.apply(await self.store.catalog_changes(self.state.catalog_seq))
        except StoreUnavailable:
            self._store_failed(degraded)

    def _pending_enrichment(self) -> int:
        return self.state.n_undescribed if self.describe_online else 0

    async def _report_levels(self, every_s: float = 5.0) -> None:
        """The exported gauges (``serve.metrics``), set every ``every_s`` while the replica lives."""
        while True:
            self.counts.gauge("items_pending_enrichment", self._pending_enrichment())
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

    def _authorize(self, authorization: str | None, what: str) -> None:
        """401 unless the request carries the app's bearer token (when it has one)."""
        token = self.cfg.token()
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or not hmac.compare_digest(given.encode(), token.encode())
        ):
            raise HTTPException(401, f"Authorization: a valid 'Bearer <token>' is required for {what}",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    async def _history(self, user_id: str, degraded: list[str]) -> list[int] | None:
        """The user's history (None: unknown user), read from the store at every request so that every
        replica sees every event at once; while the store is down, as last read, and ``store`` is degraded."""
        try:
            appended = await self.store.appended(user_id)
        except StoreUnavailable as exc:
            self._store_failed(degraded)
            if user_id not in self.state.histories and user_id not in self.last_appended:
                raise _store_down(exc) from None  # it may be a user that only the store knows
            appended = self.last_appended.get(user_id, [])
        else:
            if appended:
                self.last_appended.put(user_id, appended)
        return self.state.history(user_id, appended)

    # ---- endpoints -----------------------------------------------------------------------------------
    @app.post("/recommend", response_model=RecommendResponse, responses={404: {}, 422: {}, 503: {}})
    async def recommend(self, body: RecommendRequest) -> dict[str, Any]:
        t_start = time.perf_counter()
        st = self.state
        if (body.user_id is None) == (body.history is None):
            raise HTTPException(422, "give exactly one of user_id (a known user) or history (item ids)")
        if not 1 <= body.k <= st.n_items:
            raise HTTPException(
                422, f"k: must be between 1 and {st.n_items} (the catalog size), got {body.k}"
            )
        degraded: list[str] = []
        timings: dict[str, float] = {}
        t_catalog = time.perf_counter()
        await self._sync_catalog(degraded)
        timings["catalog"] = round((time.perf_counter() - t_catalog) * 1000, 2)
        if body.user_id is not None:
            t_store = time.perf_counter()
            full = await self._history(body.user_id, degraded)
            timings["store"] = round((time.perf_counter() - t_store) * 1000, 2)
            if full is None:
                raise HTTPException(404, f"user_id: unknown user {body.user_id!r}")
            user_key = body.user_id
        else:
            try:
                full = st.resolve(body.history or [], "history")
            except UnknownItems as exc:
                raise _unknown_items(exc) from None
            user_key = "anonymous"
        history = list(full[-self.cfg.max_history :])  # what the branches score
        intent = body.query.strip() if body.query and body.query.strip() else None
        if intent is not None and len(intent) > self.cfg.max_query_chars:
            raise HTTPException(
                422, f"query: at most {self.cfg.max_query_chars} characters, got {len(intent)}"
            )
        if not history and intent is None:
            raise HTTPException(422, "history: empty; give at least one item id, or a query")

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
            raise HTTPException(503, f"no branch answered: degraded {degraded}")
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

    @app.post("/users/{user_id}/events", response_model=EventsResponse, responses={401: {}, 422: {}, 503: {}})
    async def events(
        self, user_id: str, body: EventsRequest, authorization: str | None = Header(None),
        idempotency_key: str | None = Header(None, description="the batch's event_id, as a header"),
    ) -> dict[str, Any]:  # fmt: skip
        self._authorize(authorization, "events")
        _check_id(user_id, "user_id")
        event_id = body.event_id
        if idempotency_key is not None:
            _check_id(idempotency_key, "Idempotency-Key")
            if event_id is not None and event_id != idempotency_key:
                raise HTTPException(
                    422, "event_id: differs from the Idempotency-Key header; give one of them"
                )
            event_id = idempotency_key
        await self._sync_catalog([])  # items added online through another replica
        try:
            indices = self.state.resolve(body.item_ids, "item_ids")
        except UnknownItems as exc:
            raise _unknown_items(exc) from None
        st = self.state
        try:
            done = await self.store.append(user_id, list(body.item_ids), event_id)
        except StoreUnavailable as exc:
            self.counts["store_failed"] += 1
            raise _store_down(exc) from None
        if done.duplicate:  # answered as the first time; nothing changed
            self.counts["events_repeated"] += 1
            base = st.histories.get(user_id)
            return {"user_id": user_id, "appended": done.count, "history_length": len(base or ()) + done.kept,
                    "created": base is None and done.before == 0, "query_invalidated": False,
                    "duplicate": True, "dropped": 0}  # fmt: skip
        stored = done.items[done.dropped :]
        self.last_appended.put(user_id, stored)
        # the store returns everything up to this event, so the history before and after it is exact even
        # while other clients post for the same user
        before, history = st.history(user_id, done.items[: -done.count]), st.history(user_id, stored)
        # queries are keyed by the whole history, as the batch job and recommend key them
        invalidated = False
        if before:
            old_key = st.key(user_id, before)
            invalidated = st.queries.pop(old_key, None) is not None
            if self.llm:
                try:
                    invalidated = await self.store.pop_query(old_key) or invalidated
                except StoreUnavailable:
                    self.counts["store_failed"] += 1
        if self.llm:  # write the new history's query now, so the next request finds it
            self._start_generation(st.key(user_id, history), history[-self.cfg.max_history :])
        self.counts["events"] += len(indices)
        self.counts["events_dropped"] += done.dropped
        return {"user_id": user_id, "appended": len(indices), "history_length": len(history),
                "created": before is None, "query_invalidated": invalidated, "duplicate": False,
                "dropped": done.dropped}  # fmt: skip

    @app.post("/items", response_model=NewItemsResponse, responses={401: {}, 409: {}, 422: {}, 503: {}})
    async def add_items(
        self, body: NewItemsRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        """Add items to the catalog online, all or none: recommendable through retrieval at once (embedded
        from their metadata text by every retrieval replica), unknown to CF until it is trained again."""
        self._authorize(authorization, "adding items")
        if isinstance(self.store, MemoryStore):
            raise HTTPException(409, "items: adding items needs a shared store (store.backend sqlite or redis); "
                                     "this app's store is memory, which the retrieval replicas do not share")  # fmt: skip
        st = self.state
        rows, seen = [], set()
        for n, item in enumerate(body.items):
            given = item.model_dump(exclude_none=True)
            foreign = sorted(set(given) - set(st.columns))
            if foreign:
                raise HTTPException(422, f"items.{n}.{foreign[0]}: not a field of this catalog "
                                         f"(its fields: {', '.join(st.columns)})")  # fmt: skip
            if not item.title.strip():
                raise HTTPException(422, f"items.{n}.title: empty; an item needs a title")
            if item.item_id in seen:
                raise HTTPException(422, f"items.{n}.item_id: {item.item_id!r} is given twice")
            seen.add(item.item_id)
            rows.append(given)
        await self._sync_catalog([])
        taken = [r["item_id"] for r in rows if r["item_id"] in st.index_of]
        if taken:
            raise HTTPException(409, {"field": "item_id", "existing_item_ids": taken[:100],
                                      "message": f"item_id: already in the catalog: {taken[:20]}"})  # fmt: skip
        try:
            head = await self.store.add_items(rows)
        except ItemsExist as exc:  # added through another replica a moment ago
            raise HTTPException(409, {"field": "item_id", "existing_item_ids": exc.ids[:100],
                                      "message": str(exc)}) from None  # fmt: skip
        except StoreUnavailable as exc:
            self.counts["store_failed"] += 1
            raise _store_down(exc) from None
        await self._sync_catalog([])
        self.counts["items_added"] += len(rows)
        if self.describe_online:
            task = asyncio.get_running_loop().create_task(self._describe(rows))
            self.describing.add(task)  # kept until done: the loop holds only weak references
            task.add_done_callback(self.describing.discard)
        return {"added": [r["item_id"] for r in rows], "catalog_size": st.n_items, "catalog_seq": head}

    @app.delete("/items/{item_id}", response_model=WithdrawnResponse, responses={401: {}, 404: {}, 503: {}})
    async def withdraw_item(self, item_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        """Withdraw an item (out of stock, recalled): from the next answer of every replica on, it is never
        recommended nor found by ``GET /items?q=``; histories that hold it keep it."""
        self._authorize(authorization, "withdrawing items")
        _check_id(item_id, "item_id")
        st = self.state
        await self._sync_catalog([])
        if item_id not in st.index_of:
            raise HTTPException(404, f"item_id: unknown item {item_id!r}")
        if st.index_of[item_id] in st.hidden:
            return {"item_id": item_id, "withdrawn": False, "catalog_seq": st.catalog_seq}
        try:
            head = await self.store.hide_item(item_id)
        except StoreUnavailable as exc:
            self.counts["store_failed"] += 1
            raise _store_down(exc) from None
        await self._sync_catalog([])
        self.counts["items_withdrawn"] += 1
        return {"item_id": item_id, "withdrawn": True, "catalog_seq": head}

    @app.get("/", include_in_schema=False)
    async def explorer(self) -> HTMLResponse:
        """The explorer page: a user's history, the query and each recommendation's branches."""
        return HTMLResponse(self.explorer_page, headers=PAGE_HEADERS)

    @app.get("/items", response_model=ItemsResponse, responses={422: {}})
    async def items(
        self,
        q: str | None = Query(None, max_length=100, description="search titles (and ids) for this text"),
        ids: str | None = Query(None, max_length=10_000, description="comma-separated item ids to look up"),
        limit: int = Query(10, ge=1, le=50, description="search results to return"),
    ) -> dict[str, Any]:
        """Item summaries: a title search (``q``) or a lookup of ``ids`` in their order; exactly one of them."""
        st = self.state
        await self._sync_catalog([])
        if (q is None) == (ids is None):
            raise HTTPException(422, "give exactly one of q (a search) or ids (comma-separated item ids)")
        if q is not None:
            if not q.strip():
                raise HTTPException(422, "q: empty; give at least one character to search for")
            return {"items": [st.summary(i) for i in st.search(q, limit)]}
        wanted = [x.strip() for x in ids.split(",") if x.strip()]
        if not 1 <= len(wanted) <= MAX_LOOKUP_IDS:
            raise HTTPException(
                422, f"ids: give 1..{MAX_LOOKUP_IDS} comma-separated item ids, got {len(wanted)}"
            )
        try:
            return {"items": [st.summary(i) for i in st.resolve(wanted, "ids")]}
        except UnknownItems as exc:
            raise _unknown_items(exc) from None

    @app.get("/users/{user_id}", response_model=UserResponse, responses={404: {}, 503: {}})
    async def user(
        self, user_id: str, limit: int = Query(20, ge=1, le=200, description="recent items to return")
    ) -> dict[str, Any]:
        """A user's history length and most recent items, as recommend sees them (503 while the store is down:
        this answer never comes from a stale copy)."""
        _check_id(user_id, "user_id")
        try:
            appended = await self.store.appended(user_id)
        except StoreUnavailable as exc:
            raise _store_down(exc) from None
        history = self.state.history(user_id, appended)
        if history is None:
            raise HTTPException(404, f"user_id: unknown user {user_id!r}")
        return {"user_id": user_id, "history_length": len(history),
                "recent": [self.state.summary(i) for i in history[-limit:]]}  # fmt: skip

    @app.get("/items/{item_id}", responses={404: {}})
    async def item(self, item_id: str) -> dict[str, Any]:
        _check_id(item_id, "item_id")
        await self._sync_catalog([])
        if item_id not in self.state.index_of:
            raise HTTPException(404, f"item_id: unknown item {item_id!r}")
        if self.state.index_of[item_id] in self.state.hidden:
            raise HTTPException(404, f"item_id: item {item_id!r} is withdrawn")
        return self.state.item(item_id)

    def build_info(self) -> dict[str, Any]:
        """The build this replica serves and the branch applications it calls (for ``serve.rollout``)."""
        return {"version": self.version, "branch_apps": [r.app for r in self.branch_refs]}

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and what is served; ``status`` is ``degraded`` while a branch's latest call failed or the
        online store does not answer."""
        f = self.fusion
        branches = self.branches.health()
        store = {"name": self.store.name, "answering": True}
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            store |= {"answering": False, "error": str(exc)[:500]}
        ok = store["answering"] and all(b["answering"] for b in branches.values())
        return {
            "status": "ok" if ok else "degraded",
            "branches": branches,
            "store": store,
            "users": len(self.state.histories),
            "items": self.state.n_items,
            "catalog": {
                "added_online": self.state.n_added,
                "withdrawn": len(self.state.hidden),
                "log_position": self.state.catalog_seq,
                "pending_enrichment": self._pending_enrichment(),
            },  # fmt: skip
            "cached_queries": len(self.state.queries),
            "queries_being_written": len(self.pending),
            "version": self.version,
            "llm": self.cfg.engine.backend,
            "cf_model": self.cfg.cf_model,
            "fusion": {
                "source": f.source,  # a file name, never a path
                "method": f.config.method,
                "retrieval_weights": asdict(f.weights),
                "valid": f.valid,
            },  # fmt: skip
            "counts": dict(self.counts),
        }
