"""The retrieval branch: embed a user's query text and search the whole catalog, seen items masked.

What the user side of retrieval is, by ``QueryMode``: ``llm`` the LLM-written query text, ``llm+lastitem``
that text followed by the last history item's metadata text (one embedding), ``lastitem`` no text at all:
the last history item's own catalog vector (``actors.retriever.LastItemRetriever``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from actors.branch import BranchOutput, RowMode
from actors.encoder import TextEncoder
from actors.retriever import Retriever

QueryMode = Literal["llm", "llm+lastitem", "lastitem"]
QUERY_MODES: tuple[QueryMode, ...] = ("llm", "llm+lastitem", "lastitem")


@dataclass
class RetrievalBranchConfig:
    n: int = 100  # items returned per user
    with_last_item: bool = False  # append the last history item's metadata text to the query


class QueryRetrievalBranch:
    """``search(queries, histories) -> BranchOutput``: top-n catalog items per query, history excluded."""

    def __init__(
        self,
        encoder: TextEncoder,
        retriever: Retriever,
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

    def search(
        self,
        queries: Sequence[str],
        histories: Sequence[np.ndarray],
        n: int | None = None,
        rows: RowMode = "topn",
    ) -> BranchOutput:
        """Top-n items per query text (history excluded), with full rows or their statistics by ``rows``."""
        vectors = self.encoder.encode(self.query_texts(queries, histories))
        return self.retriever.search(vectors, n or self.config.n, exclude=histories, rows=rows)
