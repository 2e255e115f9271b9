"""The HTTP ingress: FastAPI on the rerank deployment.

``POST /recommend`` resolves the user's history and query, calls the CF branch and the query→retrieval
branch **concurrently** (``asyncio.gather``), each under its own timeout with a retry after a failure, and
fuses them with the tuned config (``actors.rerank.fuse``, the function the offline evaluation uses). A
branch that fails or is late is left out and named in ``degraded``; only when both fail is the answer a 503.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from actors.user_query import QuerySettings
from serve.config import ServeAppConfig
from serve.state import ServingState, UnknownItems, load_fusion

log = logging.getLogger("ray.serve")

app = FastAPI(
    title="q2rec",
    version="0.1.0",
    description="LLM-assisted recommendation: a personalized LLM query with retrieval over the whole "
    "catalog, fused with collaborative filtering per user.",
)
_BODY_LIMIT = {"bytes": 64 * 1024}  # set from the config by each replica
RECENT = QuerySettings().recent  # history items a query is written from


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, min_length=1, max_length=128, description="a known user")
    history: list[str] | None = Field(
        None, max_length=5000, description="item ids, oldest first, for a user without a user_id (cold start)"
    )
    k: int = Field(10, description="items to return, 1..catalog size")
    exclude_seen: bool = True
    query: str | None = Field(None, max_length=500, description="free-text intent, blended into retrieval")


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float
    cf_rank: int | None
    cf_score: float | None
    retrieval_rank: int | None
    retrieval_score: float | None


class QueryUsed(BaseModel):
    text: str | None
    source: str = Field(description="llm, fallback (built from the history's metadata) or none")
    cached: bool = Field(
        description="written earlier (batch job or a previous request) for this exact history"
    )
    intent: str | None = None


class RecommendResponse(BaseModel):
    user_id: str | None
    items: list[RecommendedItem]
    query: QueryUsed
    alpha: float | None
    degraded: list[str]
    timings_ms: dict[str, float]


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[str] = Field(..., min_length=1, max_length=1000, description="interactions, oldest first")


class EventsResponse(BaseModel):
    user_id: str
    appended: int
    history_length: int
    created: bool
    query_invalidated: bool


class BodyLimit:
    """413 for a body over the limit: by its Content-Length, or, without one, by reading at most limit + 1
    bytes. Plain ASGI (Starlette's BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = _BODY_LIMIT["bytes"]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await self._reject(length.decode(errors="replace"), limit, scope, receive, send)
            return await self.app(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:  # chunked upload: buffer up to the limit, then replay
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await self._reject(f"over {size}", limit, scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reject(length: str, limit: int, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"body of {length} bytes is over the limit of {limit}"}, 413)
        await response(scope, receive, send)


app.add_middleware(BodyLimit)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class BranchFailed(Exception):
    pass


async def _await(response):
    return await response


async def _none():
    return None


@serve.deployment
@serve.ingress(app)
class RerankDeployment:
    def __init__(self, config: dict[str, Any], query, retrieval, cf) -> None:
        from actors.user_query import UserQueryWriter

        self.cfg = ServeAppConfig(**config)
        _BODY_LIMIT["bytes"] = self.cfg.max_body_bytes
        self.state = ServingState(self.cfg)
        self.fusion = load_fusion(self.cfg)
        self.fallback_writer = UserQueryWriter(None)
        self.query, self.retrieval, self.cf = query, retrieval, cf
        self.pending: dict[str, asyncio.Task] = {}
        self.counts: Counter = Counter()
        self.llm = self.cfg.engine.backend != "none"

    # ---- query -------------------------------------------------------------------------------------
    def _start_generation(self, key: str, history: list[int]) -> asyncio.Task:
        """One generation per (user, history): concurrent requests share the running task."""
        task = self.pending.get(key)
        if task is None:
            view = self.state.history_view(history[-RECENT:])
            task = asyncio.get_running_loop().create_task(self._generate(key, view))
            self.pending[key] = task
        return task

    async def _generate(self, key: str, view: list) -> tuple[str, str]:
        try:
            out = await self.query.write.remote(view)
            self.counts["generated"] += 1
            self.state.queries.put(key, (out["text"], out["source"]))
            return out["text"], out["source"]
        except Exception as exc:  # the LLM replica failed: the next request tries again
            self.counts["generation_failed"] += 1
            log.warning("query generation failed for %s: %r", key, exc)
            raise
        finally:
            self.pending.pop(key, None)

    async def _user_query(
        self, user_key: str, history: list[int], degraded: list[str]
    ) -> tuple[str, str, bool]:
        key = self.state.key(user_key, history)
        cached = self.state.queries.get(key)
        if cached is not None:
            return cached[0], cached[1], True
        fallback = self.fallback_writer.fallback(self.state.history_view(history[-RECENT:]))
        if not self.llm:
            return fallback, "fallback", False
        task = self._start_generation(key, history)
        if self.cfg.timeouts.llm > 0:
            try:
                return (*await asyncio.wait_for(asyncio.shield(task), self.cfg.timeouts.llm), False)
            except Exception:  # late or failed: the metadata-built query serves
                pass
        degraded.append("llm")
        return fallback, "fallback", False

    # ---- branches ------------------------------------------------------------------------------------
    async def _call(self, name: str, handle, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One branch call under its timeout, retried after a failure (not after a timeout)."""
        deadline = time.perf_counter() + timeout
        for attempt in range(self.cfg.timeouts.retries + 1):
            response = handle.score.remote(payload)
            try:
                return await asyncio.wait_for(_await(response), max(deadline - time.perf_counter(), 1e-3))
            except TimeoutError:
                response.cancel()
                self.counts[f"{name}_timeout"] += 1
                raise BranchFailed(f"{name}: no answer within {timeout}s") from None
            except Exception as exc:
                self.counts[f"{name}_error"] += 1
                log.warning("%s branch failed (attempt %d): %r", name, attempt + 1, exc)
                if attempt == self.cfg.timeouts.retries or time.perf_counter() >= deadline:
                    raise BranchFailed(f"{name}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def _timed(self, name, handle, payload, timeout, timings) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return await self._call(name, handle, payload, timeout)
        finally:
            timings[name] = round((time.perf_counter() - t0) * 1000, 2)

    async def _branches(self, cf_payload, ret_payload, timings):
        t = self.cfg.timeouts
        cf = self._timed("cf", self.cf, cf_payload, t.cf, timings) if cf_payload else None
        ret = (
            self._timed("retrieval", self.retrieval, ret_payload, t.retrieval, timings)
            if ret_payload
            else None
        )
        if self.cfg.fan_out == "serial":  # only for the composition benchmark
            out = []
            for c in (cf, ret):
                try:
                    out.append(await c if c is not None else None)
                except BranchFailed as exc:
                    out.append(exc)
            return out
        calls = [c if c is not None else _none() for c in (cf, ret)]
        return await asyncio.gather(*calls, return_exceptions=True)

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
        if body.user_id is not None:
            if body.user_id not in st.histories:
                raise HTTPException(404, f"user_id: unknown user {body.user_id!r}")
            history = list(st.histories[body.user_id])
            user_key = body.user_id
        else:
            try:
                history = st.resolve(body.history or [], "history")
            except UnknownItems as exc:
                raise HTTPException(422, {"field": exc.field, "unknown_item_ids": exc.ids[:100],
                                          "message": str(exc)[:2000]}) from None  # fmt: skip
            user_key = "anonymous"
        intent = body.query.strip() if body.query and body.query.strip() else None
        if not history and intent is None:
            raise HTTPException(422, "history: empty; give at least one item id, or a query")
        history = history[-self.cfg.max_history :]

        degraded: list[str] = []
        timings: dict[str, float] = {}
        text, source, cached = None, "none", False
        if history:
            text, source, cached = await self._user_query(user_key, history, degraded)
        texts = [x for x in (text, intent) if x]
        w = self.cfg.intent_weight
        weights = [1 - w, w] if (text and intent) else [1.0]
        exclude = sorted(set(history)) if body.exclude_seen else []
        fusion = self.fusion.config
        n = max(self.cfg.branch_n or fusion.n, body.k)
        cf_payload = {"history": history, "exclude": exclude, "n": n} if history else None
        ret_payload = {"texts": texts, "weights": weights, "history": history, "exclude": exclude, "n": n}
        t_branch = time.perf_counter()
        cf_res, ret_res = await self._branches(cf_payload, ret_payload, timings)
        timings["branches"] = round((time.perf_counter() - t_branch) * 1000, 2)
        if not history:
            degraded.append("cf")  # nothing to score from; not a failure
        for name, res in (("cf", cf_res), ("retrieval", ret_res)):
            if isinstance(res, BaseException):
                degraded.append(name)
                self.counts[f"degraded_{name}"] += 1
        cf_ok = isinstance(cf_res, dict) and len(cf_res["ids"]) > 0
        ret_ok = isinstance(ret_res, dict) and len(ret_res["ids"]) > 0
        if not cf_ok and not ret_ok and ("cf" in degraded or "retrieval" in degraded):
            raise HTTPException(503, f"no branch answered: degraded {degraded}")
        t_fuse = time.perf_counter()
        max_alpha = self.cfg.intent_max_alpha if intent else 1.0
        items, alpha = self._fuse(
            cf_res if cf_ok else None, ret_res if ret_ok else None, len(history), body.k, max_alpha
        )
        timings["fuse"] = round((time.perf_counter() - t_fuse) * 1000, 2)
        timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        self.counts["recommend"] += 1
        return {
            "user_id": body.user_id,
            "items": items,
            "query": {"text": text, "source": source, "cached": cached, "intent": intent},
            "alpha": alpha,
            "degraded": degraded,
            "timings_ms": timings,
        }

    def _fuse(
        self, cf, ret, history_len: int, k: int, max_alpha: float = 1.0
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Fuse one user's branch answers; ``max_alpha`` caps the CF weight (a free-text intent asks for
        the retrieval branch to count, however long the history)."""
        from actors.rerank import fuse, user_alpha

        st = self.state
        if cf is None and ret is None:
            return [], None
        if cf is None or ret is None:  # one branch: its own ranking
            one = cf if cf is not None else ret
            ids, scores = one["ids"][:k], one["scores"][:k]
            ranks = np.arange(1, len(ids) + 1)
            return [
                {"item_id": st.item_ids[i], "title": st.titles[i], "score": float(s),
                 "cf_rank": int(r) if cf is not None else None, "cf_score": float(s) if cf is not None else None,
                 "retrieval_rank": int(r) if ret is not None else None,
                 "retrieval_score": float(s) if ret is not None else None}
                for i, s, r in zip(ids, scores, ranks, strict=True)
            ], (1.0 if cf is not None else 0.0)  # fmt: skip
        cfg = replace(self.fusion.config, n=max(self.fusion.config.n, k))
        alpha_u = float(user_alpha(cfg, np.array([history_len]), cf["scores"][None, : cfg.n])[0])
        if alpha_u > max_alpha:
            cfg = replace(cfg, method="fixed", alpha=max_alpha)
        full = [None if r["full"] is None else r["full"][None] for r in (cf, ret)]
        f = fuse(cf["ids"][None], cf["scores"][None], ret["ids"][None], ret["scores"][None],
                 np.array([history_len]), cfg, k, full[0], full[1])  # fmt: skip
        out = []
        for j in range(f.ids.shape[1]):
            i = int(f.ids[0, j])
            cr, rr = int(f.cf_rank[0, j]), int(f.retrieval_rank[0, j])
            out.append({
                "item_id": st.item_ids[i], "title": st.titles[i], "score": float(f.scores[0, j]),
                "cf_rank": cr or None, "cf_score": _finite(f.cf_score[0, j]) if cr else None,
                "retrieval_rank": rr or None, "retrieval_score": _finite(f.retrieval_score[0, j]) if rr else None,
            })  # fmt: skip
        return out, float(f.alpha[0])

    @app.post("/users/{user_id}/events", response_model=EventsResponse, responses={401: {}, 422: {}})
    async def events(
        self, user_id: str, body: EventsRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        token = self.cfg.token()
        if token is not None:
            given = (authorization or "").removeprefix("Bearer ").strip()
            if (
                not authorization
                or not authorization.startswith("Bearer ")
                or not hmac.compare_digest(given.encode(), token.encode())
            ):
                raise HTTPException(401, "Authorization: a valid 'Bearer <token>' is required for events",
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not 1 <= len(user_id) <= 128:
            raise HTTPException(422, f"user_id: must be 1..128 characters, got {len(user_id)}")
        try:
            indices = self.state.resolve(body.item_ids, "item_ids")
        except UnknownItems as exc:
            raise HTTPException(422, {"field": exc.field, "unknown_item_ids": exc.ids[:100],
                                      "message": str(exc)[:2000]}) from None  # fmt: skip
        old = self.state.histories.get(user_id)
        old_key = self.state.key(user_id, old) if old else None
        length, created = self.state.append(user_id, indices)
        invalidated = old_key is not None and self.state.queries.pop(old_key, None) is not None
        if self.llm:  # write the new history's query now, so the next request finds it
            self._start_generation(self.state.key(user_id, self.state.histories[user_id]),
                                   self.state.histories[user_id][-self.cfg.max_history :])  # fmt: skip
        self.counts["events"] += len(indices)
        return {"user_id": user_id, "appended": len(indices), "history_length": length, "created": created,
                "query_invalidated": invalidated}  # fmt: skip

    @app.get("/items/{item_id}", responses={404: {}})
    async def item(self, item_id: str) -> dict[str, Any]:
        if item_id not in self.state.index_of:
            raise HTTPException(404, f"item_id: unknown item {item_id!r}")
        return self.state.item(item_id)

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        f = self.fusion
        return {
            "status": "ok",
            "users": len(self.state.histories),
            "items": self.state.n_items,
            "cached_queries": len(self.state.queries),
            "queries_being_written": len(self.pending),
            "llm": self.cfg.engine.backend,
            "cf_model": self.cfg.cf_model,
            "fusion": {
                "source": f.source,
                "method": f.config.method,
                "with_last_item": f.with_last_item,
                "valid": f.valid,
            },  # fmt: skip
            "counts": dict(self.counts),
        }
