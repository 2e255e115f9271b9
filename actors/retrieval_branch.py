"""The retrieval branch: embed a user's query text and search the whole catalog, seen items masked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.encoder import TextEncoder
from actors.ranking import mask_items
from actors.retriever import FaissRetriever


@dataclass
class RetrievalBranchConfig:
    n: int = 100  # items returned per user
    with_last_item: bool = False  # append the last history item's metadata text to the query


class QueryRetrievalBranch:
    """``search(queries, histories) -> (ids, scores)``: top-n catalog items per query, history excluded."""

    def __init__(
        self,
        encoder: TextEncoder,
        retriever: FaissRetriever,
        item_texts: Sequence[str],
        config: RetrievalBranchConfig | None = None,
    ) -> None:
        self.encoder = encoder
        self.retriever = retriever
        self.item_texts = list(item_texts)
        self.config = config or RetrievalBranchConfig()

    def query_texts(self, queries: Sequence[str], histories: Sequence[np.ndarray]) -> list[str]:
        if not self.config.with_last_item:
            return list(queries)
        return [
            f"{q}. {self.item_texts[int(h[-1])]}" if len(h) else q
            for q, h in zip(queries, histories, strict=True)
        ]

    def score_all(self, queries: Sequence[str], histories: Sequence[np.ndarray]) -> np.ndarray:
        """(n, n_items) exact inner products with every stored item vector, history set to -inf."""
        return self.score_vectors(self.encoder.encode(self.query_texts(queries, histories)), histories)

    def score_vectors(self, vectors: np.ndarray, exclude: Sequence[np.ndarray]) -> np.ndarray:
        """(n, n_items) inner products of already-encoded query vectors, each row's ``exclude`` set to -inf."""
        return mask_items(np.atleast_2d(vectors) @ self.retriever.vectors.T, exclude)

    def search(
        self, queries: Sequence[str], histories: Sequence[np.ndarray], n: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.encoder.encode(self.query_texts(queries, histories))
        return self.retriever.search(vectors, n or self.config.n, exclude=histories)
