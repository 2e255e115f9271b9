"""The ingress's writes, apart from HTTP: events appended to a user's history, items added to the catalog
online, items withdrawn. ``serve.api`` translates HTTP to them and their errors back (``BadRequest`` 422,
``Conflict`` 409, ``NotFound`` 404, ``UnknownItems`` 422, ``StoreUnavailable`` 503).

An event batch is stored once per ``event_id`` (the store's idempotency), and the query written for the
history before it is dropped, since queries are keyed by the whole history. Items are added all or none
through the store's catalog log, which every replica reads before its next answer; they are recommendable
through retrieval at once (their metadata text embedded by each retrieval replica) and described by the LLM
in the background where the retrieval weighs descriptions.
"""

from __future__ import annotations

from typing import Any

from serve.recommender import BadRequest, Recommender
from serve.schemas import NewItem
from serve.store import ItemsExist, MemoryStore, StoreUnavailable


class Conflict(RuntimeError):
    """A write that contradicts the catalog (an item id that exists); ``detail`` names the field and ids."""

    def __init__(self, detail: dict[str, Any] | str) -> None:
        super().__init__(detail if isinstance(detail, str) else detail["message"])
        self.detail = detail


class NotFound(LookupError):
    """An item id the catalog does not know."""


class OnlineWrites:
    """The writes of one ingress replica, on its ``Recommender``'s state, store and counts."""

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    async def events(self, user_id: str, item_ids: list[str], event_id: str | None) -> dict[str, Any]:
        """Append ``item_ids`` to the user's history (a repeat of ``event_id`` changes nothing and is
        answered as the first time); returns the ``EventsResponse`` body."""
        rec, st = self.rec, self.rec.state
        await rec.sync_catalog([])  # items added online through another replica
        indices = st.resolve(item_ids, "item_ids")
        done = await self._store(rec.store.append(user_id, list(item_ids), event_id))
        if done.duplicate:  # answered as the first time; nothing changed
            rec.counts["events_repeated"] += 1
            base = st.histories.get(user_id)
            return {"user_id": user_id, "appended": done.count, "history_length": len(base or ()) + done.kept,
                    "created": base is None and done.before == 0, "query_invalidated": False,
                    "duplicate": True, "dropped": 0}  # fmt: skip
        stored = done.items[done.dropped :]
        rec.last_appended.put(user_id, stored)
        # the store returns everything up to this event, so the history before and after it is exact even
        # while other clients post for the same user
        before, history = st.history(user_id, done.items[: -done.count]), st.history(user_id, stored)
        # queries are keyed by the whole history, as the batch job and recommend key them
        invalidated = False
        if before:
            old_key = st.key(user_id, before)
            invalidated = st.queries.pop(old_key, None) is not None
            if rec.llm:
                try:
                    invalidated = await rec.store.pop_query(old_key) or invalidated
                except StoreUnavailable:
                    rec.counts["store_failed"] += 1
        if rec.llm:  # write the new history's query now, so the next request finds it
            rec.start_generation(st.key(user_id, history), history[-rec.cfg.max_history :])
        rec.counts["events"] += len(indices)
        rec.counts["events_dropped"] += done.dropped
        return {"user_id": user_id, "appended": len(indices), "history_length": len(history),
                "created": before is None, "query_invalidated": invalidated, "duplicate": False,
                "dropped": done.dropped}  # fmt: skip

    async def add_items(self, items: list[NewItem]) -> dict[str, Any]:
        """Add ``items`` to the catalog, all or none; returns the ``NewItemsResponse`` body."""
        rec, st = self.rec, self.rec.state
        if isinstance(rec.store, MemoryStore):
            raise Conflict("items: adding items needs a shared store (store.backend sqlite or redis); "
                           "this app's store is memory, which the retrieval replicas do not share")  # fmt: skip
        rows, seen = [], set()
        for n, item in enumerate(items):
            given = item.model_dump(exclude_none=True)
            foreign = sorted(set(given) - set(st.columns))
            if foreign:
                raise BadRequest(f"items.{n}.{foreign[0]}: not a field of this catalog "
                                 f"(its fields: {', '.join(st.columns)})")  # fmt: skip
            if not item.title.strip():
                raise BadRequest(f"items.{n}.title: empty; an item needs a title")
            if item.item_id in seen:
                raise BadRequest(f"items.{n}.item_id: {item.item_id!r} is given twice")
            seen.add(item.item_id)
            rows.append(given)
        await rec.sync_catalog([])
        taken = [r["item_id"] for r in rows if r["item_id"] in st.index_of]
        if taken:
            raise Conflict({"field": "item_id", "existing_item_ids": taken[:100],
                            "message": f"item_id: already in the catalog: {taken[:20]}"})  # fmt: skip
        try:
            head = await self._store(rec.store.add_items(rows))
        except ItemsExist as exc:  # added through another replica a moment ago
            raise Conflict(
                {"field": "item_id", "existing_item_ids": exc.ids[:100], "message": str(exc)}
            ) from None
        await rec.sync_catalog([])
        rec.counts["items_added"] += len(rows)
        rec.describe_later(rows)
        return {"added": [r["item_id"] for r in rows], "catalog_size": st.n_items, "catalog_seq": head}

    async def withdraw(self, item_id: str) -> dict[str, Any]:
        """Withdraw an item from every answer (histories that hold it keep it); returns the
        ``WithdrawnResponse`` body."""
        rec, st = self.rec, self.rec.state
        await rec.sync_catalog([])
        if item_id not in st.index_of:
            raise NotFound(f"item_id: unknown item {item_id!r}")
        if st.index_of[item_id] in st.hidden:
            return {"item_id": item_id, "withdrawn": False, "catalog_seq": st.catalog_seq}
        head = await self._store(rec.store.hide_item(item_id))
        await rec.sync_catalog([])
        rec.counts["items_withdrawn"] += 1
        return {"item_id": item_id, "withdrawn": True, "catalog_seq": head}

    async def _store(self, call):
        """Await a store write; a store that is down is counted, then raised."""
        try:
            return await call
        except StoreUnavailable:
            self.rec.counts["store_failed"] += 1
            raise
