"""Retrieval weights searched at any catalog size: each trial scores a fixed candidate set per user.

Above ``tune.branches_store.TRIAL_BUDGET`` a trial cannot score every item for every user. What the fusion
needs of the retrieval branch is its top-n and, on full-row catalogs, the true scores of the items on CF's
list and the whole row's statistics. So each user gets a fixed candidate set, computed once with FAISS: the
union of each query part's own top-N (over the metadata vectors and, where enriched descriptions exist,
over theirs), each part's few lowest-scored items, and (full-row catalogs) the CF branch's list. Every
candidate keeps each part's score on both sides, so a trial scores a candidate for any weights as

    s = Σ_p w_p (a_p + e·b_p) / ‖m + e·d‖,   ‖m + e·d‖² = 1 + e² + 2e·(m·d)   (unit vectors m, d)

(users × candidates instead of users × items; a_p, b_p: part p's scores against the metadata and description
vectors, e: the ``enriched`` weight), exactly the score ``RetrievalParts.scores`` gives that item.

Full-row catalogs (``actors.branch.default_row_mode``) fuse in *candidate coordinates*: both branches' rows
over the candidates (column j = the user's j-th candidate) with the statistics of the whole row (CF's once;
retrieval's from the item vectors' moments, ``actors.retriever.moment_stats``), so an item on one list gets
its true score from the other, as in Serve's full-row mode. Top-n catalogs keep the retrieval top-n only,
as Serve does there. What can differ from scoring every item: a weighted query's true top-n item outside
every part's own top-N, and (min-max norm) a row minimum outside the parts' lowest few;
``bench/candidate_trials.py`` measures both against full rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from actors.branch import BranchOutput, RowStats
from actors.retrieval_query import PARTS, QueryParts, RetrievalWeights, item_vectors
from actors.retriever import Retriever, item_moments, moment_stats
from tune.retrieval_parts import RetrievalParts

LOWEST = 10  # each part's lowest-scored items among the candidates: the row minimum of min-max norm


def row_union(lists: Sequence[np.ndarray], pad: int) -> np.ndarray:
    """(n_users, m) each row's distinct ids of ``lists`` (each (n_users, *)), ascending, ``pad`` after them
    (``pad`` above every id, so rows stay sorted)."""
    ids = np.sort(np.concatenate([np.asarray(x, dtype=np.int64) for x in lists], axis=1), axis=1)
    dup = np.zeros(ids.shape, dtype=bool)
    dup[:, 1:] = ids[:, 1:] == ids[:, :-1]
    ids[dup | (ids < 0)] = pad
    ids = np.sort(ids, axis=1)
    width = int((ids < pad).sum(axis=1).max(initial=0))
    return ids[:, :width]


def local_positions(ids: np.ndarray, wanted: np.ndarray, n_items: int) -> np.ndarray:
    """(n_users, k) the column of each ``wanted`` id in its row of ``ids`` (rows ascending; every wanted
    id present)."""
    stride = n_items + 1
    offset = np.arange(len(ids), dtype=np.int64)[:, None] * stride
    pos = np.searchsorted((ids + offset).ravel(), (wanted + offset).ravel()).reshape(wanted.shape)
    return pos - np.arange(len(ids), dtype=np.int64)[:, None] * ids.shape[1]


def part_scores(
    vectors: np.ndarray, parts: np.ndarray, ids: np.ndarray, pad: int, chunk: int = 256
) -> np.ndarray:
    """(3, n_users, m) float32: each part's inner product with each candidate's vector (0 at padding)."""
    out = np.zeros((parts.shape[0], *ids.shape), dtype=np.float32)
    for start in range(0, len(ids), chunk):
        rows = slice(start, start + chunk)
        cand = np.minimum(ids[rows], pad - 1)
        out[:, rows] = np.einsum("pud,umd->pum", parts[:, rows], np.asarray(vectors)[cand], optimize=True)
    return out


@dataclass(frozen=True)
class RetrievalCandidates:
    """Each user's candidates and every query part's score for them; ``output(weights, n)`` is the
    retrieval branch's answer for any weights, from these alone (module docstring)."""

    n_items: int
    ids: np.ndarray  # (n_users, m) int64 item ids, ascending; n_items pads
    meta: np.ndarray  # (3, n_users, m) float32: part scores against the metadata vectors
    desc: np.ndarray | None  # (3, n_users, m) against the description vectors (enriched catalogs)
    cross: np.ndarray | None  # (n_users, m) m·d of each candidate
    cf_local: BranchOutput | None = None  # full rows: CF in candidate coordinates, whole-row statistics
    # full rows: what the retrieval row's statistics come from (parts, item vectors, histories)
    moments: RetrievalParts | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        parts: QueryParts,
        histories: Sequence[np.ndarray],
        meta_index: Retriever,
        desc_index: Retriever | None,
        n: int,
        cf: BranchOutput | None = None,
        moments: RetrievalParts | None = None,
    ) -> RetrievalCandidates:
        """FAISS top-``n`` and lowest ``LOWEST`` of every non-zero query part over each side's index,
        united with ``cf``'s list; ``cf`` with full rows and ``moments`` (``RetrievalParts``) give
        full-row fusion."""
        n_items = meta_index.size
        stack = parts.stack()
        lists = [] if cf is None else [cf.ids]
        for index in (meta_index, desc_index):
            if index is None:
                continue
            for p in range(len(PARTS)):
                if not np.any(stack[p]):
                    continue
                lists.append(index.search(stack[p], n, exclude=histories).ids)
                lists.append(index.search(-stack[p], LOWEST, exclude=histories).ids)
        ids = row_union(lists, n_items)
        meta = part_scores(meta_index.vectors, stack, ids, n_items)
        desc = cross = None
        if desc_index is not None:
            desc = part_scores(desc_index.vectors, stack, ids, n_items)
            both = np.einsum("id,id->i", np.asarray(meta_index.vectors), np.asarray(desc_index.vectors))
            cross = both[np.minimum(ids, n_items - 1)].astype(np.float32)
        cf_local = None
        if cf is not None and cf.full is not None:
            rows = np.take_along_axis(cf.full, np.minimum(ids, n_items - 1), axis=1)
            rows[ids == n_items] = -np.inf
            local = local_positions(ids, cf.ids, n_items)
            cf_local = BranchOutput(local, cf.scores, rows, RowStats.of(cf.full))
        return cls(n_items, ids, meta, desc, cross, cf_local, moments)

    @property
    def full_rows(self) -> bool:
        """Whether trials fuse in candidate coordinates with whole-row statistics (full-row catalogs)."""
        return self.cf_local is not None

    def scores(self, weights: RetrievalWeights) -> np.ndarray:
        """(n_users, m) float32 retrieval scores of the candidates for ``weights``, -inf at padding."""
        w = weights.parts()
        s = np.tensordot(w, self.meta, axes=1)
        if weights.enriched:
            if self.desc is None:
                raise ValueError(f"enriched weight {weights.enriched} needs the description vectors; build "
                                 "them with `q2rec index --text description`")  # fmt: skip
            e = np.float32(weights.enriched)
            s = (s + e * np.tensordot(w, self.desc, axes=1)) / np.sqrt(1 + e * e + 2 * e * self.cross)
        s = s.astype(np.float32)
        s[self.ids == self.n_items] = -np.inf
        return s

    def output(self, weights: RetrievalWeights, n: int) -> tuple[BranchOutput, BranchOutput | None]:
        """(the retrieval answer in item ids, topn mode; the same in candidate coordinates with its rows over
        the candidates and the whole row's statistics, or None on top-n catalogs)."""
        rows = self.scores(weights)
        local = BranchOutput.from_rows(rows, n, "topn")
        answer = BranchOutput(np.take_along_axis(self.ids, local.ids, axis=1), local.scores)
        if not self.full_rows:
            return answer, None
        m = self.moments
        vectors, moments = self._item_side(weights.enriched)
        mean, std = moment_stats(m.parts.vectors(weights), vectors, moments, m.mask_rows, m.mask_cols)
        finite = np.isfinite(rows)
        lo = np.where(finite, rows, np.inf).min(axis=1).astype(np.float64)
        hi = np.where(finite, rows, -np.inf).max(axis=1).astype(np.float64)
        return answer, BranchOutput(local.ids, local.scores, rows, RowStats(mean, std, lo, hi))

    def _item_side(self, enriched: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The item vectors of ``enriched`` and their moments, kept for the next trial with that weight."""
        cache = self._cache
        if enriched not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            vectors = item_vectors(self.moments.metadata, self.moments.description, enriched)
            cache[enriched] = (vectors, item_moments(vectors))
        return cache[enriched]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"cand_ids": self.ids, "cand_meta": self.meta, "cand_n_items": np.array(self.n_items)}
        if self.desc is not None:
            out |= {"cand_desc": self.desc, "cand_cross": self.cross}
        if self.cf_local is not None:
            out |= self.cf_local.arrays("cand_cf")
        return out

    @classmethod
    def from_arrays(cls, z, moments=None) -> RetrievalCandidates | None:
        keys = set(z.keys())
        if "cand_ids" not in keys:
            return None
        desc = np.asarray(z["cand_desc"]) if "cand_desc" in keys else None
        cross = np.asarray(z["cand_cross"]) if "cand_cross" in keys else None
        cf_local = BranchOutput.from_arrays(z, "cand_cf") if "cand_cf_ids" in keys else None
        return cls(int(z["cand_n_items"]), np.asarray(z["cand_ids"]), np.asarray(z["cand_meta"]), desc, cross,
                   cf_local, moments if cf_local is not None else None)  # fmt: skip
