"""The HTTP ingress: FastAPI on the rerank deployment. Its endpoints translate HTTP to the replica's
``serve.recommender.Recommender`` (history, query, both branches, fusion) and ``serve.writes.OnlineWrites``
(events, items added and withdrawn), and their errors to status codes (``_as_http``): a bad field 422, an
unknown user or item 404, an existing item 409, the store down or no branch answering 503. Bodies are in
``serve.schemas``.

``POST /items`` and ``DELETE /items/{id}`` change the catalog online, through the store's catalog log.
Every request reads the log's head first (one small store read), so an item added or withdrawn through
any replica counts in every replica's next answer; the retrieval call carries the position, so retrieval
replicas catch up before answering. CF does not know an added item until it is trained again: it is
absent from CF's list and row, and enters an answer only through retrieval.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import RayServeException
from swagger_ui_bundle import swagger_ui_path

from serve.config import ServeAppConfig
from serve.deployments import BranchRef, branch_handle
from serve.middleware import BodyLimit, ReplicaHeader, configure, settings
from serve.recommender import BadRequest, NoBranchAnswered, Recommender, UnknownUser
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
from serve.state import UnknownItems
from serve.store import StoreUnavailable
from serve.writes import Conflict, NotFound, OnlineWrites

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


@contextmanager
def _as_http():
    """The errors of ``Recommender`` and ``OnlineWrites`` as HTTP status codes, each naming its field."""
    try:
        yield
    except BadRequest as exc:
        raise HTTPException(422, str(exc)) from None
    except UnknownItems as exc:
        raise HTTPException(
            422, {"field": exc.field, "unknown_item_ids": exc.ids[:100], "message": str(exc)[:2000]}
        ) from None
    except (UnknownUser, NotFound) as exc:
        raise HTTPException(404, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, exc.detail) from None
    except StoreUnavailable as exc:
        raise HTTPException(503, {"store": exc.store, "message": str(exc)[:2000]}) from None
    except NoBranchAnswered as exc:
        raise HTTPException(503, str(exc)) from None


@serve.deployment
@serve.ingress(app)
class RerankDeployment:
    async def __init__(self, config: dict[str, Any], query, retrieval, cf) -> None:
        """Loads the serving state (``Recommender``), then waits (up to ``timeouts.warmup``) until both
        branches answer within their budgets: Serve routes traffic to this replica only after that, so ready
        means warm. A branch is a bound deployment, or a ``BranchRef`` to a branch application of its own
        (``serve.rollout``)."""
        self.branch_refs = [b for b in (retrieval, cf) if isinstance(b, BranchRef)]
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
        self.rec = Recommender(self.cfg, query, branch_handle(retrieval), branch_handle(cf))
        await self.rec.start()
        self.writes = OnlineWrites(self.rec)
        self.explorer_page = EXPLORER.read_text()
        if self.cfg.timeouts.warmup > 0:
            t0 = time.perf_counter()
            # ready only once this build's branches answer
            silent = await self.rec.warm(self.cfg.timeouts.warmup)
            if silent:
                log.warning(
                    "taking traffic although %s did not answer within %.0fs", silent, self.cfg.timeouts.warmup
                )
            else:
                log.info("both branches answer, %.1fs after the ingress was loaded", time.perf_counter() - t0)

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

    # ---- endpoints -----------------------------------------------------------------------------------
    @app.post("/recommend", response_model=RecommendResponse, responses={404: {}, 422: {}, 503: {}})
    async def recommend(self, body: RecommendRequest) -> dict[str, Any]:
        """The user's top-k: CF and retrieval over the whole catalog at once, fused (``Recommender``)."""
        with _as_http():
            return await self.rec.recommend(body)

    @app.post("/users/{user_id}/events", response_model=EventsResponse, responses={401: {}, 422: {}, 503: {}})
    async def events(
        self, user_id: str, body: EventsRequest, authorization: str | None = Header(None),
        idempotency_key: str | None = Header(None, description="the batch's event_id, as a header"),
    ) -> dict[str, Any]:  # fmt: skip
        """Append items to a user's history, once per ``event_id`` (or ``Idempotency-Key``)."""
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
        with _as_http():
            return await self.writes.events(user_id, list(body.item_ids), event_id)

    @app.post("/items", response_model=NewItemsResponse, responses={401: {}, 409: {}, 422: {}, 503: {}})
    async def add_items(
        self, body: NewItemsRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        """Add items to the catalog online, all or none: recommendable through retrieval at once (embedded
        from their metadata text by every retrieval replica), unknown to CF until it is trained again."""
        self._authorize(authorization, "adding items")
        with _as_http():
            return await self.writes.add_items(body.items)

    @app.delete("/items/{item_id}", response_model=WithdrawnResponse, responses={401: {}, 404: {}, 503: {}})
    async def withdraw_item(self, item_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        """Withdraw an item (out of stock, recalled): from the next answer of every replica on, it is never
        recommended nor found by ``GET /items?q=``; histories that hold it keep it."""
        self._authorize(authorization, "withdrawing items")
        _check_id(item_id, "item_id")
        with _as_http():
            return await self.writes.withdraw(item_id)

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
        st = self.rec.state
        await self.rec.sync_catalog([])
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
        with _as_http():
            return {"items": [st.summary(i) for i in st.resolve(wanted, "ids")]}

    @app.get("/users/{user_id}", response_model=UserResponse, responses={404: {}, 503: {}})
    async def user(
        self, user_id: str, limit: int = Query(20, ge=1, le=200, description="recent items to return")
    ) -> dict[str, Any]:
        """A user's history length and most recent items, as recommend sees them (503 while the store is down:
        this answer never comes from a stale copy)."""
        _check_id(user_id, "user_id")
        with _as_http():
            appended = await self.rec.store.appended(user_id)
        history = self.rec.state.history(user_id, appended)
        if history is None:
            raise HTTPException(404, f"user_id: unknown user {user_id!r}")
        return {"user_id": user_id, "history_length": len(history),
                "recent": [self.rec.state.summary(i) for i in history[-limit:]]}  # fmt: skip

    @app.get("/items/{item_id}", responses={404: {}})
    async def item(self, item_id: str) -> dict[str, Any]:
        _check_id(item_id, "item_id")
        await self.rec.sync_catalog([])
        if item_id not in self.rec.state.index_of:
            raise HTTPException(404, f"item_id: unknown item {item_id!r}")
        if self.rec.state.index_of[item_id] in self.rec.state.hidden:
            raise HTTPException(404, f"item_id: item {item_id!r} is withdrawn")
        return self.rec.state.item(item_id)

    def build_info(self) -> dict[str, Any]:
        """The build this replica serves and the branch applications it calls (for ``serve.rollout``)."""
        return {"version": self.rec.version, "branch_apps": [r.app for r in self.branch_refs]}

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and what is served; ``status`` is ``degraded`` while a branch's latest call failed or the
        online store does not answer."""
        f = self.rec.fusion
        branches = self.rec.branches.health()
        store = {"name": self.rec.store.name, "answering": True}
        try:
            await self.rec.store.ping()
        except StoreUnavailable as exc:
            store |= {"answering": False, "error": str(exc)[:500]}
        ok = store["answering"] and all(b["answering"] for b in branches.values())
        return {
            "status": "ok" if ok else "degraded",
            "branches": branches,
            "store": store,
            "users": len(self.rec.state.histories),
            "items": self.rec.state.n_items,
            "catalog": {
                "added_online": self.rec.state.n_added,
                "withdrawn": len(self.rec.state.hidden),
                "log_position": self.rec.state.catalog_seq,
                "pending_enrichment": self.rec.pending_enrichment(),
            },  # fmt: skip
            "cached_queries": len(self.rec.state.queries),
            "queries_being_written": len(self.rec.pending),
            "version": self.rec.version,
            "llm": self.cfg.engine.backend,
            "cf_model": self.cfg.cf_model,
            "fusion": {
                "source": f.source,  # a file name, never a path
                "method": f.config.method,
                "retrieval_weights": asdict(f.weights),
                "valid": f.valid,
            },  # fmt: skip
            "counts": dict(self.rec.counts),
        }
