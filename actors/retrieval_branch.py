"""The retrieval branch: a user's weighted query vector searched over the whole catalog, seen items masked.

The query is built from its parts (``actors.retrieval_query``): the last history item's metadata vector, the
items before it, the user's LLM queries (each embedded on its own, their normalised mean) and, online, a
free-text intent blended in with ``intent_weight``. The retriever searches the item vectors of the weights
(metadata + ``enriched`` x description). Offline evaluation builds the same parts with the same functions,
so an answer online equals the offline one for the same user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from actors.branch import BranchOutput, RowMode
from actors.retrieval_query import QueryParts, RetrievalWeights, text_directions
from actors.retriever import Retriever

Encode = Callable[[list[str]], np.ndarray]  # texts -> (n, d) unit vectors


class QueryRetrievalBranch:
    """``search(histories, texts, intents) -> BranchOutput``: top-n catalog items per user, history excluded.

    ``metadata`` are the catalog's metadata vectors (the history parts come from them); ``retriever``
    searches the item vectors of ``weights``; ``encode`` embeds query texts (a text encoder's ``encode``, or
    a cached one), and ``encode_intent`` free-text intents (default: ``encode``; a cache of their own keeps
    a stream of one-off intents from evicting the users' query vectors)."""

    def __init__(
        self,
        encode: Encode,
        metadata: np.ndarray,
        retriever: Retriever,
        weights: RetrievalWeights,
        intent_weight: float = 0.5,
        n: int = 100,
        encode_intent: Encode | None = None,
    ) -> None:
        if len(metadata) != retriever.size:
            raise ValueError(f"{len(metadata)} metadata vectors for a catalog of {retriever.size}")
        if not 0 <= intent_weight <= 1:
            raise ValueError(f"intent_weight must be in [0, 1], got {intent_weight}")
        self.encode, self.metadata, self.retriever = encode, metadata, retriever
        self.encode_intent = encode_intent or encode
        self.weights, self.intent_weight, self.n = weights, intent_weight, n

    def query_vectors(
        self,
        histories: Sequence[np.ndarray],
        texts: Sequence[Sequence[str]] | None = None,
        intents: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """(n_users, d): the weighted parts (LLM texts only encoded when their weight is above 0), then each
        intent blended in as (1 - intent_weight) x the unit query + intent_weight x the intent's vector."""
        llm = None
        if self.weights.llm and texts is not None:
            llm = text_directions(texts, self.encode, self.retriever.dim)
        q = QueryParts.build(self.metadata, histories, llm).vectors(self.weights)
        if intents is not None and any(intents):
            rows = [i for i, t in enumerate(intents) if t]
            iv = self.encode_intent([str(intents[i]) for i in rows])
            base = q[rows]
            norm = np.linalg.norm(base, axis=1, keepdims=True)
            unit = np.where(norm > 1e-12, base / np.maximum(norm, 1e-12), 0.0)
            w = np.where(norm > 1e-12, self.intent_weight, 1.0)  # no query to blend with: the intent alone
            q[rows] = ((1 - w) * unit + w * iv).astype(np.float32)
        return q

    def search(
        self,
        histories: Sequence[np.ndarray],
        texts: Sequence[Sequence[str]] | None = None,
        intents: Sequence[str | None] | None = None,
        n: int | None = None,
        rows: RowMode = "topn",
        exclude: Sequence[np.ndarray] | None = None,
    ) -> BranchOutput:
        """Top-n items per user (``exclude``, default the history, never listed), with full rows or their
        statistics by ``rows``."""
        q = self.query_vectors(histories, texts, intents)
        return self.retriever.search(
            q, n or self.n, exclude=histories if exclude is None else exclude, rows=rows
        )
