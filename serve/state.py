"""What each ingress replica holds in memory: the catalog, each user's base history, the batch job's queries and
the fusion config.

Users are served with their history up to the held-out test item (train + validation), so an answer for a
known user equals the offline test evaluation of the same fusion. Events append to that history in the
shared online store (``serve.store``), which every replica reads.

The catalog grows online: ``apply`` takes the store's catalog log (items added, items withdrawn) in order,
so every replica gives an added item the same index (the base catalog's size, then one per addition).
Withdrawn items stay in the catalog (a history may hold them) but are never recommended or listed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from actors.fusion_file import FusionFile
from actors.rerank import FusionConfig
from actors.retrieval_query import RetrievalWeights
from actors.user_query import HistoryItem, history_items, history_key
from data_prep.artifacts import ArtifactPaths, fingerprint
from data_prep.corpus import Corpus
from serve.config import ServeAppConfig
from serve.store import CatalogChange

log = logging.getLogger(__name__)


SUMMARY_CHARS = 200  # a text field of an item summary is cut to this


def _plain(value: Any) -> Any:
    """A catalog value as JSON takes it: NaN is None, numpy scalars are Python ones."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and np.isnan(value) else value


class UnknownItems(ValueError):
    def __init__(self, field: str, ids: list[str]) -> None:
        super().__init__(f"{field}: unknown item id(s) {ids}")
        self.field = field
        self.ids = ids


def load_fusion(cfg: ServeAppConfig) -> FusionFile:
    """``fusion.json`` (checked: ``FusionFileError`` names the file and the key), or the defaults when there is
    none; the app config's ``retrieval_weights`` override the weights it was tuned with. ``source`` names
    the file (never its path) or the defaults."""
    path = cfg.fusion_file
    if path.is_file():
        fusion = FusionFile.load(path).model_copy(update={"source": path.name})
    else:
        log.warning("%s not found: serving with the default fusion config; run `q2rec search`", path)
        fusion = FusionFile(config=FusionConfig(), source="defaults (no fusion.json)")
    if cfg.retrieval_weights is not None:
        try:
            weights = RetrievalWeights.from_dict(cfg.retrieval_weights)
        except ValueError as exc:
            raise ValueError(f"retrieval_weights: {exc}") from None
        fusion = fusion.model_copy(update={"weights": weights})
    return fusion


def serving_version(cfg: ServeAppConfig) -> str:
    """The version of the build an app serves: a fingerprint of what its deployments read (the catalog, the
    item indexes, the CF model's fit, ``fusion.json``) and of the config fields that pick among them. Every
    deployment computes it from the same config, so replicas of one build agree, and during a rollout a
    branch replica refuses a request of another build (``serve.deployments.VersionMismatch``)."""
    paths = ArtifactPaths(cfg.root)
    return fingerprint(
        paths.items, paths.index_dir("metadata") / "index.json", paths.index_dir("description") / "index.json",
        paths.model_dir(cfg.cf_model) / "config.json", cfg.fusion_file, cfg.cf_model, cfg.retrieval_weights,
    )  # fmt: skip


class LRU(OrderedDict):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class ServingState:
    """Catalog lookups, base histories and the (user, history hash) → (query, source) cache."""

    def __init__(self, cfg: ServeAppConfig) -> None:
        paths = ArtifactPaths(cfg.root)
        if not paths.is_prepared():
            raise FileNotFoundError(
                f"{paths.root}: not prepared; run `make demo` (or data_prep.prepare) first"
            )
        corpus = Corpus.load(paths)
        self.items = corpus.items.reset_index(drop=True)
        self.item_ids = corpus.item_ids
        self.index_of = {iid: i for i, iid in enumerate(self.item_ids)}
        self.unseen = corpus.item_popularity() == 0  # items the CF models never saw in training
        self.n_base = len(self.item_ids)  # the catalog the CF model was trained on
        self.columns = [str(c) for c in self.items.columns]  # the fields an item added online may have
        self.catalog_seq = 0  # how far the store's catalog log is applied
        self.hidden: set[int] = set()  # withdrawn items
        self.described: set[int] = set()  # items added online whose LLM description the log holds
        self.titles = self.items["title"].astype(str).tolist()
        self.rows = self.items.to_dict("records")
        self.folded_titles = [t.casefold() for t in self.titles]  # what search() matches against
        enriched = paths.items_enriched
        self.descriptions: dict[str, str] = (
            pd.read_parquet(enriched).set_index("item_id")["description"].astype(str).to_dict()
            if enriched.is_file()
            else {}
        )
        self.histories: dict[str, list[int]] = {}
        test_users = set(corpus.eval_users("test").tolist())
        for u, uid in enumerate(corpus.user_ids):
            seq = corpus.train_seqs[u].tolist()
            if u in test_users:
                seq.append(int(corpus.valid_target[u]))
            self.histories[str(uid)] = seq
        self.queries = LRU(cfg.query_cache_size)
        qpath = paths.user_queries
        if qpath.is_file():
            q = pd.read_parquet(qpath)
            texts = q["queries"]
            for key, ts, source in zip(q["key"], texts, q["source"], strict=True):
                self.queries.put(str(key), (tuple(str(t) for t in ts), str(source)))
        self.loaded_queries = len(self.queries)
        log.info("serving %d users, %d items, %d cached queries", len(self.histories), len(self.item_ids),
                 self.loaded_queries)  # fmt: skip

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_added(self) -> int:
        return self.n_items - self.n_base

    @property
    def n_undescribed(self) -> int:
        """Items added online, not withdrawn, whose LLM description has not landed yet."""
        waiting = set(range(self.n_base, self.n_items)) - self.described - self.hidden
        return len(waiting)

    def apply(self, changes: Sequence[CatalogChange]) -> None:
        """Apply the catalog log's changes after ``catalog_seq``, in order (those already applied are skipped)."""
        changes = [c for c in changes if c.seq > self.catalog_seq]
        added = [c for c in changes if c.op == "add" and c.item_id not in self.index_of]
        if added:
            rows = [dict(c.row or {}) for c in added]
            self.item_ids = np.concatenate([self.item_ids, np.asarray([c.item_id for c in added], dtype=str)])
            for c, row in zip(added, rows, strict=True):
                self.index_of[c.item_id] = len(self.rows)
                self.rows.append(row)
                self.titles.append(str(row.get("title", "")))
                self.folded_titles.append(self.titles[-1].casefold())
            self.unseen = np.concatenate([self.unseen, np.ones(len(added), dtype=bool)])  # CF never saw them
        for c in changes:
            if c.op == "hide" and c.item_id in self.index_of:
                self.hidden.add(self.index_of[c.item_id])
            elif c.op == "describe" and self.index_of.get(c.item_id, -1) >= self.n_base and c.row:
                self.descriptions[c.item_id] = str(c.row.get("description", ""))  # what query prompts show
                self.described.add(self.index_of[c.item_id])
        if changes:
            self.catalog_seq = changes[-1].seq
            log.info("catalog log applied to %d: %d items added online, %d withdrawn", self.catalog_seq,
                     self.n_added, len(self.hidden))  # fmt: skip

    def resolve(self, ids: Sequence[str], field: str) -> list[int]:
        """Item indices of ``ids``; every unknown id is listed in the error."""
        unknown = [i for i in ids if i not in self.index_of]
        if unknown:
            raise UnknownItems(field, list(dict.fromkeys(unknown)))
        return [self.index_of[i] for i in ids]

    def key(self, user_id: str, history: Sequence[int]) -> str:
        return history_key(user_id, self.item_ids[np.asarray(history, dtype=np.int64)].tolist())

    def history_view(self, history: Sequence[int]) -> list[HistoryItem]:
        return history_items([self.rows[i] for i in history], self.descriptions)

    def history(self, user_id: str, appended: Sequence[str]) -> list[int] | None:
        """A user's history as item indices: the base one (train + validation) and then the items appended
        online (``serve.store``); None for a user neither knows."""
        base = self.histories.get(user_id)
        if not appended:  # the common case, per request: no copy
            return base
        extra = [self.index_of[i] for i in appended if i in self.index_of]
        if len(extra) < len(appended):  # the catalog changed under the store
            log.warning("user %s: %d appended item(s) not in the catalog are left out", user_id,
                        len(appended) - len(extra))  # fmt: skip
        return [*(base or ()), *extra]

    def item(self, item_id: str) -> dict[str, Any]:
        row = self.rows[self.index_of[item_id]]
        return {k: _plain(v) for k, v in row.items()} | {"description": self.descriptions.get(item_id, "")}

    def summary(self, index: int) -> dict[str, Any]:
        """An item as lists show it: id, title and its other catalog fields (long texts cut short)."""
        row = self.rows[index]
        meta = {k: _plain(v) for k, v in row.items() if k not in ("item_id", "title")}
        meta = {k: (v[:SUMMARY_CHARS] if isinstance(v, str) else v) for k, v in meta.items()}
        return {"item_id": self.item_ids[index], "title": self.titles[index], "meta": meta}

    def search(self, text: str, limit: int) -> list[int]:
        """Item indices for a search box: the item whose id is ``text``, then titles starting with it, then
        titles containing it (case-insensitive), each group in catalog order. A scan of every title."""
        text = text.strip()
        q = text.casefold()
        exact = (
            [self.index_of[text]] if text in self.index_of and self.index_of[text] not in self.hidden else []
        )
        starts, contains = [], []
        for i, t in enumerate(self.folded_titles):
            if q in t and i not in exact and i not in self.hidden:
                (starts if t.startswith(q) else contains).append(i)
                if len(starts) >= limit:
                    break
        return (exact + starts + contains)[:limit]
