"""Retrievers: nearest items to query vectors over the whole catalog, inner product on unit vectors (cosine).

One batch-first interface, ``Retriever.search(query_vectors, k, exclude, rows) -> BranchOutput``, with
three implementations that pass one contract test (``tests/actors/test_retriever.py``):

- ``ExactRetriever``: a flat inner product with every item vector (small catalogs; exact full rows).
- ``FaissRetriever``: a FAISS index: flat (exact) by default up to 100,000 items, IVF above (trained on a
  sample, nprobe tuned to a target recall), or HNSW; an approximate build measures its recall@10 against
  exact search and ``save`` writes it into ``index.json``.
- ``LastItemRetriever``: content retrieval with the last history item's vector as the query (the
  query-free baseline), over any of the other two.
- ``GrowingRetriever``: any of them plus items added online, kept in a small exact side index (FAISS flat)
  whose top-k is merged with the base index's at search time (FAISS indexes are left as built: IVF's lists and HNSW's
  graph were tuned for the catalog they were built on).

Every row of a result has k' = min(k, pool size - largest exclude list) real results: FAISS's -1 padding
never comes out, a k larger than the pool is fine, and excluded items are never listed. ``rows`` says what
the fusion gets about the rest of the catalog (see ``actors.branch``): the full score rows (always exact),
their statistics (exact mean and std from the item vectors' moments, min and max from searches), or
nothing.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from actors.branch import ROW_MODES, BranchOutput, RowMode, RowStats
from actors.ranking import mask_items, top_scores

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]
RECALL_K = 10


@dataclass
class IndexConfig:
    """How the FAISS index is built. ``auto``: exact (flat) up to ``exact_max_items`` items, IVF above it.

    IVF trains its coarse quantizer on a sample of ``ivf_train_per_list`` vectors per list, and with
    ``ivf_nprobe`` = 0 probes the fewest lists (1, 2, 4, ...) that reach ``target_recall`` at 10 on the
    recall sample; every approximate build measures its recall@10 against exact search on
    ``recall_queries`` catalog items (each item's own vector as the query, itself left out)."""

    kind: IndexKind = "auto"
    exact_max_items: int = 100_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0: about 4 * sqrt(n)
    ivf_nprobe: int = 0  # 0: tuned at build time to target_recall
    ivf_train_per_list: int = 64
    target_recall: float = 0.95
    recall_queries: int = 1000
    seed: int = 0

    def resolved(self, n: int) -> IndexConfig:
        """This config for a catalog of ``n`` items: ``auto`` made concrete, IVF's list count fixed."""
        if self.kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ValueError(f"index kind must be auto, flat, hnsw or ivf; got {self.kind!r}")
        kind = self.kind if self.kind != "auto" else "flat" if n <= self.exact_max_items else "ivf"
        nlist = self.ivf_nlist
        if kind == "ivf" and not nlist:
            nlist = max(1, min(n // 39, int(4 * math.sqrt(n))))
        return replace(self, kind=kind, ivf_nlist=nlist)


def build_index(vectors: np.ndarray, config: IndexConfig):
    """A FAISS inner-product index over ``vectors`` (n, d), which should be unit length. ``config`` should
    be resolved (``IndexConfig.resolved``); an IVF index left at nprobe 0 probes one list until tuned."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    config = config.resolved(n)
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    else:
        nlist = config.ivf_nlist
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, max(nlist * config.ivf_train_per_list, 39 * nlist))
        rows = np.random.default_rng(config.seed).choice(n, sample, replace=False) if sample < n else None
        index.train(vectors if rows is None else vectors[np.sort(rows)])
        index.nprobe = min(config.ivf_nprobe or 1, nlist)
    index.add(vectors)
    return index


@dataclass(frozen=True)
class RecallSample:
    """Queries (m, d) with each one's exact top 10 (m, 10); ``skip``: the item each query leaves out (its
    own row, when the queries are catalog items), or None."""

    queries: np.ndarray
    truth: np.ndarray
    skip: np.ndarray | None = None


def recall_sample(
    vectors: np.ndarray, n_queries: int, seed: int = 0, queries: np.ndarray | None = None
) -> RecallSample:
    """The recall sample: up to ``n_queries`` random rows of ``queries`` (default: of the catalog, each
    leaving itself out) and each one's exact top 10 by inner product."""
    rng = np.random.default_rng(seed)
    pool = vectors if queries is None else np.asarray(queries, dtype=np.float32)
    rows = np.sort(rng.choice(len(pool), min(n_queries, len(pool)), replace=False))
    q = np.ascontiguousarray(pool[rows])
    skip = rows if queries is None else None
    truth = np.empty((len(rows), RECALL_K), dtype=np.int64)
    for start in range(0, len(rows), 256):
        scores = q[start : start + 256] @ vectors.T
        if skip is not None:
            scores[np.arange(len(scores)), skip[start : start + 256]] = -np.inf
        truth[start : start + 256] = top_scores(scores, RECALL_K)[0]
    return RecallSample(q, truth, skip)


def index_recall(index, sample: RecallSample) -> float:
    """Mean recall@10 of ``index`` on ``sample`` (``recall_sample``)."""
    _, ids = index.search(sample.queries, RECALL_K + 1)
    skip = sample.skip if sample.skip is not None else np.full(len(ids), -2)  # -2: never a FAISS id
    hits = [len(set(got[got != s][:RECALL_K].tolist()) & set(want.tolist()))
            for s, got, want in zip(skip, ids, sample.truth, strict=True)]  # fmt: skip
    return float(np.mean(hits)) / RECALL_K


def _exclude_sets(exclude: Sequence[np.ndarray] | None, n: int) -> list[np.ndarray]:
    if exclude is None:
        return [np.empty(0, dtype=np.int64)] * n
    if len(exclude) != n:
        raise ValueError(f"exclude has {len(exclude)} rows for {n} queries")
    return [np.unique(np.asarray(e, dtype=np.int64)) for e in exclude]


class Retriever(ABC):
    """Base class of every retriever: ``vectors`` (n_items, d) are the item vectors whose inner products
    with a query are its scores; row i is catalog item index i (``item_ids[i]``)."""

    vectors: np.ndarray
    item_ids: np.ndarray

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        rows: RowMode = "topn",
    ) -> BranchOutput:
        """Top-k item indices and scores per query, best first, skipping each row's ``exclude`` items; with
        ``rows`` = full / stats, also each query's scores of every item, or their statistics."""
        q = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query_vectors have dimension {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if rows not in ROW_MODES:
            raise ValueError(f"rows must be one of {ROW_MODES}, got {rows!r}")
        excl = _exclude_sets(exclude, len(q))
        k_out = min(k, self.size - max((len(e) for e in excl), default=0))
        if k_out <= 0:
            return BranchOutput.empty(len(q))
        if rows == "full":  # the exact rows are at hand: their top-k is the answer
            full = self.exact().score_rows(q, excl)
            return BranchOutput.from_rows(full, k_out, "full")
        ids, scores = self._top(q, k_out, excl)
        ids, scores = ids.astype(np.int64), scores.astype(np.float32)
        return BranchOutput(ids, scores, None, self._stats(q, excl, scores) if rows == "stats" else None)

    @abstractmethod
    def _top(self, q: np.ndarray, k: int, excl: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) (n, k) of valid queries; k ≤ pool size minus every exclude list."""

    def exact(self) -> ExactRetriever:
        """An exact retriever over the same item vectors (full rows, and rows an index came back short on)."""
        cached = getattr(self, "_exact_twin", None)
        if cached is None:
            cached = ExactRetriever(self.vectors, self.item_ids)
            self._exact_twin = cached
        return cached

    def _stats(self, q: np.ndarray, excl: list[np.ndarray], top: np.ndarray) -> RowStats:
        """Statistics of each query's full score row without computing it: the mean and the standard
        deviation from the item vectors' moments (``moment_stats``), less the excluded items; the max is the
        top-1 score, the min the top-1 of the negated query."""
        rows = np.repeat(np.arange(len(excl)), [len(e) for e in excl])
        cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in excl]) if len(rows) else rows
        mean, std = moment_stats(q, self.vectors, self._moments(), rows, cols)
        _, low = self._top(-q, 1, excl)
        return RowStats(mean, std, -low[:, 0].astype(np.float64), top[:, 0].astype(np.float64))

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        cached = getattr(self, "_moments_cache", None)
        if cached is None:
            cached = item_moments(self.vectors)
            self._moments_cache = cached
        return cached


def item_moments(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean vector, Gram matrix) of item vectors, float64: what ``moment_stats`` needs of them."""
    v = np.asarray(vectors, dtype=np.float64)
    return v.mean(axis=0), v.T @ v


def moment_stats(
    q: np.ndarray,
    vectors: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per query of its inner products with every item vector but the excluded (row, col)
    pairs, in O(d²) per query instead of O(n_items · d): the sums over all items from ``moments``
    (``item_moments``), less the excluded items' own scores."""
    mean_v, gram = moments
    size = len(vectors)
    q64 = np.asarray(q, dtype=np.float64)
    s1 = (q64 @ mean_v) * size
    q32 = np.asarray(q, dtype=np.float32)  # a float32 matrix product, not a per-query loop
    s2 = ((q32 @ gram.astype(np.float32)) * q32).sum(axis=1, dtype=np.float64)
    n_left = np.full(len(q), float(size))
    if len(rows):
        se = (q32[rows] * np.asarray(vectors[cols], dtype=np.float32)).sum(axis=1, dtype=np.float64)
        s1 -= np.bincount(rows, se, minlength=len(q))
        s2 -= np.bincount(rows, se**2, minlength=len(q))
        n_left -= np.bincount(rows, minlength=len(q))
    mean = s1 / np.maximum(n_left, 1)
    return mean, np.sqrt(np.maximum(s2 / np.maximum(n_left, 1) - mean**2, 0.0))


class ExactRetriever(Retriever):
    """Exact search: one inner product with every item vector (the one place that computes it)."""

    def __init__(self, vectors: np.ndarray, item_ids: Sequence[str] | None = None) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = item_ids if item_ids is not None else np.arange(len(self.vectors)).astype(str)
        if len(ids) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors for {len(ids)} item ids")
        self.item_ids = np.asarray(ids, dtype=str)

    def exact(self) -> ExactRetriever:
        return self

    def score_rows(
        self, query_vectors: np.ndarray, exclude: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """(n, n_items) float32 scores of every item, each row's ``exclude`` items set to -inf."""
        q = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        rows = q @ self.vectors.T
        return rows if exclude is None else mask_items(rows, exclude)

    def _top(self, q, k, excl):
        return top_scores(self.score_rows(q, excl), k)

    def _stats(self, q, excl, top):
        return RowStats.of(self.score_rows(q, excl))


class FaissRetriever(Retriever):
    """Searches a FAISS index whose row i is item index i of the catalog."""

    def __init__(
        self, index, vectors: np.ndarray, item_ids: Sequence[str], config: IndexConfig | None = None
    ):
        if index.ntotal != len(vectors) or len(vectors) != len(item_ids):
            raise ValueError(f"index has {index.ntotal} rows, vectors {len(vectors)}, ids {len(item_ids)}")
        self.index = index
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.config = config or IndexConfig()

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        item_ids: Sequence[str],
        config: IndexConfig | None = None,
        queries: np.ndarray | None = None,
    ):
        """Build the index ``config`` says for this many items; an approximate one has its recall@10 against
        exact search measured (and IVF its nprobe tuned to ``target_recall``), kept in ``build_info``. The
        recall is measured on ``queries`` when given (the queries the index will serve), else on catalog
        items."""
        config = (config or IndexConfig()).resolved(len(vectors))
        index = build_index(vectors, config)
        retriever = cls(index, vectors, item_ids, config)
        retriever.build_info = (
            {"recall_at_10": 1.0} if config.kind == "flat" else retriever._measure_recall(queries)
        )
        return retriever

    def _measure_recall(self, queries: np.ndarray | None = None) -> dict:
        t0 = time.perf_counter()
        sample = recall_sample(self.vectors, self.config.recall_queries, self.config.seed, queries)
        if self.config.kind == "ivf" and not self.config.ivf_nprobe:
            nprobe = 1
            while True:
                self.index.nprobe = nprobe
                recall = index_recall(self.index, sample)
                if recall >= self.config.target_recall or nprobe >= self.config.ivf_nlist:
                    break
                nprobe = min(2 * nprobe, self.config.ivf_nlist)
            self.config = replace(self.config, ivf_nprobe=nprobe)
        recall = index_recall(self.index, sample)
        return {"recall_at_10": round(recall, 4), "recall_queries": len(sample.queries),
                "recall_on": "catalog items" if queries is None else "given queries",
                "recall_s": round(time.perf_counter() - t0, 2)}  # fmt: skip

    def _top(self, q, k, excl):
        max_excl = max((len(e) for e in excl), default=0)
        scores, ids = self.index.search(q, min(self.size, k + max_excl))
        out_ids = np.empty((len(q), k), dtype=np.int64)
        out_scores = np.empty((len(q), k), dtype=np.float32)
        short = []
        for row in range(len(q)):
            keep = (ids[row] >= 0) & ~np.isin(ids[row], excl[row])
            got_ids, got_scores = ids[row][keep][:k], scores[row][keep][:k]
            if len(got_ids) < k:  # an approximate index came back short: exact search for this row
                short.append(row)
                continue
            out_ids[row], out_scores[row] = got_ids, got_scores
        if short:
            ids_s, scores_s = self.exact()._top(q[short], k, [excl[r] for r in short])
            out_ids[short], out_scores[short] = ids_s, scores_s
        return out_ids, out_scores

    def save(self, folder: str | Path, meta: dict | None = None, with_vectors: bool = True) -> Path:
        """Write the index, item ids, ``index.json`` and (``with_vectors``) the item vectors into ``folder``;
        without them, ``load`` must be given the vectors (an owner that keeps them elsewhere)."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if with_vectors:
            np.save(folder / "vectors.npy", self.vectors)
        faiss.write_index(self.index, str(folder / "faiss.index"))
        (folder / "item_ids.json").write_text(json.dumps(self.item_ids.tolist()))
        info = {"config": asdict(self.config), "size": self.size, "dim": self.dim}
        info |= getattr(self, "build_info", {}) | (meta or {})
        (folder / "index.json").write_text(json.dumps(info, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, vectors: np.ndarray | None = None) -> FaissRetriever:
        """The retriever ``save`` wrote; ``vectors``: the item vectors, when they were saved elsewhere. Saved
        vectors are memory-mapped, read-only: a search reads only the rows it needs (the history items of a
        query), and replicas on one machine share the file's pages."""
        import faiss

        folder = Path(folder)
        if not (folder / "faiss.index").is_file():
            raise FileNotFoundError(f"{folder}: no faiss.index; run `q2rec index` first")
        info = json.loads((folder / "index.json").read_text())
        index = faiss.read_index(str(folder / "faiss.index"))
        config = IndexConfig(**info["config"])
        if config.kind == "hnsw":
            index.hnsw.efSearch = config.hnsw_ef_search
        elif config.kind == "ivf":
            index.nprobe = config.ivf_nprobe or 1
        ids = json.loads((folder / "item_ids.json").read_text())
        if vectors is None:
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        return cls(index, vectors, ids, config)


class LastItemRetriever(Retriever):
    """Content retrieval whose query is the last history item's own vector (the query-free baseline):
    ``recommend(histories, k)`` searches ``base`` (exact or FAISS) with it, the history excluded. Users
    without history get a zero query (every score 0)."""

    def __init__(self, base: Retriever) -> None:
        self.base = base
        self.vectors, self.item_ids = base.vectors, base.item_ids

    def query_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        last = np.array([int(h[-1]) if len(h) else -1 for h in histories], dtype=np.int64)
        return np.where(last[:, None] >= 0, self.vectors[np.maximum(last, 0)], 0.0).astype(np.float32)

    def recommend(self, histories: Sequence[np.ndarray], k: int, rows: RowMode = "topn") -> BranchOutput:
        return self.search(self.query_vectors(histories), k, exclude=histories, rows=rows)

    def exact(self) -> ExactRetriever:
        return self.base.exact()

    def _top(self, q, k, excl):
        return self.base._top(q, k, excl)

    def _stats(self, q, excl, top):
        return self.base._stats(q, excl, top)


class StackedRows:
    """Two row arrays read as one, without copying: rows 0..len(base)-1 are ``base``'s, then ``extra``'s.
    Takes what the query parts and the row statistics read: ``len``, ``shape``, an int, a slice or an int
    array."""

    def __init__(self, base: np.ndarray, extra: np.ndarray) -> None:
        self.base, self.extra = base, extra
        self.shape = (len(base) + len(extra), base.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        nb = len(self.base)
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        if np.ndim(index) == 0:
            i = int(index)
            return self.base[i] if i < nb else self.extra[i - nb]
        idx = np.asarray(index, dtype=np.int64)
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        low = idx < nb
        out[low] = self.base[idx[low]]
        out[~low] = self.extra[idx[~low] - nb]
        return out


class GrowingRetriever(Retriever):
    """``base`` (exact or FAISS, left as built) plus items added online: an exact side index whose top-k is
    merged with the base's. Added item i is catalog index ``base.size + i``; ``added_seq`` keeps the log
    position (``serve.store.CatalogChange.seq``) each arrived with, so a search can leave out what came
    after a given position (``added_after``)."""

    def __init__(self, base: Retriever) -> None:
        self.base = base
        self._buffer = np.zeros((0, base.dim), dtype=np.float32)  # grown by doubling: adding one is O(1)
        self._n_extra = 0
        self.extra_ids: list[str] = []
        self.added_seq = np.zeros(0, dtype=np.int64)
        self._side = None  # a FAISS flat index over ``extra``
        self._reset()

    def _reset(self) -> None:
        self._ids_cache = self._exact_cache = self._moments_cache = None

    def add(self, vectors: np.ndarray, item_ids: Sequence[str], seq: Sequence[int] | int = 0) -> None:
        """Append unit ``vectors`` (n, d) for ``item_ids``; ``seq``: their log positions (one for all)."""
        v = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if v.shape != (len(item_ids), self.dim):
            raise ValueError(f"{v.shape} vectors for {len(item_ids)} items of dimension {self.dim}")
        if self._side is None:
            import faiss

            self._side = faiss.IndexFlatIP(self.dim)
        self._side.add(v)
        need = self._n_extra + len(v)
        if need > len(self._buffer):
            grown = np.zeros((max(need, 2 * len(self._buffer), 64), self.dim), dtype=np.float32)
            grown[: self._n_extra] = self.extra
            self._buffer = grown
        self._buffer[self._n_extra : need] = v
        self._n_extra = need
        self.extra_ids += [str(i) for i in item_ids]
        self.added_seq = np.concatenate([self.added_seq, np.broadcast_to(np.asarray(seq, np.int64), len(v))])
        self._reset()

    def replace(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """New unit ``vectors`` for items added before (their LLM description landed); same positions."""
        v = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        at = {iid: i for i, iid in enumerate(self.extra_ids)}
        missing = [str(i) for i in item_ids if str(i) not in at]
        if missing or v.shape != (len(item_ids), self.dim):
            raise ValueError(f"{v.shape} vectors for {len(item_ids)} items; not added here: {missing[:10]}")
        self._buffer[[at[str(i)] for i in item_ids]] = v
        self._side.reset()
        self._side.add(self.extra)
        self._reset()

    @property
    def extra(self) -> np.ndarray:
        """(n_added, d): the vectors of the items added online, in order."""
        return self._buffer[: self._n_extra]

    def added_after(self, seq: int) -> np.ndarray:
        """Catalog indices of the items added after log position ``seq``."""
        return self.base.size + np.flatnonzero(self.added_seq > seq)

    @property
    def item_ids(self) -> np.ndarray:
        if self._ids_cache is None:
            self._ids_cache = np.concatenate([self.base.item_ids, np.asarray(self.extra_ids, dtype=str)])
        return self._ids_cache

    @property
    def size(self) -> int:
        return self.base.size + len(self.extra)

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def vectors(self) -> StackedRows:
        return StackedRows(self.base.vectors, self.extra)

    def exact(self) -> ExactRetriever:
        if not len(self.extra):
            return self.base.exact()
        if self._exact_cache is None:  # a copy of every vector: full rows are for small catalogs only
            self._exact_cache = ExactRetriever(np.concatenate([self.base.vectors, self.extra]), self.item_ids)
        return self._exact_cache

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        if self._moments_cache is None:
            mean_b, gram_b = self.base._moments()
            e = self.extra.astype(np.float64)
            mean = (mean_b * self.base.size + e.sum(axis=0)) / max(self.size, 1)
            self._moments_cache = (mean, gram_b + e.T @ e)
        return self._moments_cache

    def _top(self, q, k, excl):
        nb = self.base.size
        if not len(self.extra):
            return self.base._top(q, k, excl)
        base_excl = [e[e < nb] for e in excl]
        kb = min(k, nb - max((len(e) for e in base_excl), default=0))
        extra_excl = [e[e >= nb] - nb for e in excl]
        # the side index is a FAISS flat index too: a numpy product here leaves BLAS threads spinning
        # against FAISS's OpenMP threads (measured: the base search 1.6x slower right after one)
        extra_k = min(len(self.extra), k + max((len(e) for e in extra_excl), default=0))
        extra_scores, extra_ids = self._side.search(q, extra_k)
        for row, e in enumerate(extra_excl):
            if len(e):
                extra_scores[row, np.isin(extra_ids[row], e)] = -np.inf
        parts_ids, parts_scores = [nb + extra_ids], [extra_scores]
        if kb > 0:
            ids_b, scores_b = self.base._top(q, kb, base_excl)
            parts_ids.insert(0, ids_b)
            parts_scores.insert(0, scores_b)
        ids, scores = np.concatenate(parts_ids, axis=1), np.concatenate(parts_scores, axis=1)
        cols, top = top_scores(scores, k)
        out_ids = np.take_along_axis(ids, cols, axis=1)
        short = np.flatnonzero(~np.isfinite(top).all(axis=1))  # a row the base's shared k left short
        if len(short):
            ids_s, top_s = self.exact()._top(q[short], k, [excl[r] for r in short])
            out_ids[short], top[short] = ids_s, top_s
        return out_ids, top
