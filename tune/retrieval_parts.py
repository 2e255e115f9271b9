"""What a search trial computes the retrieval branch's answer for any weights from, scoring every item:
each user's query parts, the item vectors and the histories (``tune.branches`` keeps them where a trial may
score every item; ``tune.candidates`` keeps them for the whole row's statistics above that)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.branch import BranchOutput
from actors.retrieval_query import QueryParts, RetrievalWeights, item_vectors
from actors.retriever import ExactRetriever


@dataclass(frozen=True)
class RetrievalParts:
    """What the retrieval branch's answer for any weights is computed from: each user's query parts
    (``actors.retrieval_query.QueryParts``), the metadata item vectors and (where the catalog has enriched
    descriptions) their vectors, and the histories (never listed). ``output(weights)`` computes exactly what
    the retrieval branch answers with those weights: the same query vectors, item vectors and exact scores
    Serve's retrieval deployment computes for a catalog with full rows."""

    parts: QueryParts
    metadata: np.ndarray
    description: np.ndarray | None
    mask_rows: np.ndarray  # (user row, item) pairs never listed: the histories
    mask_cols: np.ndarray

    @classmethod
    def build(cls, parts: QueryParts, metadata: np.ndarray, description: np.ndarray | None,
              histories: Sequence[np.ndarray]) -> RetrievalParts:  # fmt: skip
        lengths = [len(h) for h in histories]
        rows = np.repeat(np.arange(len(histories)), lengths).astype(np.int64)
        cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if rows.size else rows
        return cls(parts, metadata, description, rows, cols.astype(np.int64))

    def scores(self, weights: RetrievalWeights) -> np.ndarray:
        """(n_users, n_items) float32 score rows for ``weights``, history items at -inf."""
        vectors = item_vectors(self.metadata, self.description, weights.enriched)
        rows = ExactRetriever(vectors).score_rows(self.parts.vectors(weights))
        rows[self.mask_rows, self.mask_cols] = -np.inf
        return rows

    def output(self, weights: RetrievalWeights, n: int) -> BranchOutput:
        return BranchOutput.from_rows(self.scores(weights), n, "full")

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"parts": self.parts.stack(), "item_metadata": self.metadata, "mask_rows": self.mask_rows,
               "mask_cols": self.mask_cols}  # fmt: skip
        if self.description is not None:
            out["item_description"] = self.description
        return out

    @classmethod
    def from_arrays(cls, z) -> RetrievalParts | None:
        keys = set(z.keys())
        if "parts" not in keys:
            return None
        desc = np.asarray(z["item_description"]) if "item_description" in keys else None
        return cls(QueryParts(*np.asarray(z["parts"])), np.asarray(z["item_metadata"]), desc,
                   np.asarray(z["mask_rows"]), np.asarray(z["mask_cols"]))  # fmt: skip
