"""The retrieval branch's query as weighted parts, and its item vectors as weighted sides.

A user's query vector is a weighted sum of parts, each embedded on its own (never one embedding of a
concatenated text, which lets a weak part dilute a strong one):

- ``last``: the last history item's metadata vector;
- ``recent``: the ``RECENT_ITEMS`` items before it, weighted ``RECENT_DECAY ** j`` (j = 0 for the nearest);
- ``llm``: the user's LLM-written queries, the normalised mean of their vectors (several per user when the
  writer samples several);
- online, a free-text intent, blended in by the Serve config's ``intent_weight``.

An item's vector is its metadata vector plus ``enriched`` times the vector of its LLM-enriched description,
normalised. A score is the inner product of the two, so the weighted sum of the parts' similarities and the
similarity with the weighted sum of their vectors are the same thing; scaling a user's query vector changes
no ranking and no normalised fused score. Every weight may be 0: ``llm = enriched = 0`` is the system without
an LLM, and the fusion search (``tune.search``) tunes the weights on validation with the rest of the fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

RECENT_ITEMS = 3
RECENT_DECAY = 0.5
PARTS = ("last", "recent", "llm")  # the query parts, in the order ``QueryParts.stack`` gives them
WEIGHTS = ("last", "recent", "llm", "enriched")


@dataclass(frozen=True)
class RetrievalWeights:
    """Weights of the query parts (``last``, ``recent``, ``llm``) and of the item side's enriched
    description (``enriched``). ``llm`` and ``enriched`` are the LLM's share: 0 turns it off."""

    last: float = 1.0
    recent: float = 0.0
    llm: float = 0.0
    enriched: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0):
                raise ValueError(f"retrieval weight {f.name} must be a finite number >= 0, got {v!r}")

    @property
    def uses_llm(self) -> bool:
        return self.llm > 0 or self.enriched > 0

    def parts(self) -> np.ndarray:
        """(3,) the weights of ``PARTS``."""
        return np.array([self.last, self.recent, self.llm], dtype=np.float32)

    @classmethod
    def from_dict(cls, d: dict | None) -> RetrievalWeights:
        """From ``fusion.json``'s ``weights``; unknown keys are an error that names them."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(WEIGHTS))
        if unknown:
            raise ValueError(f"unknown retrieval weight(s) {unknown}; known: {list(WEIGHTS)}")
        return cls(**{k: float(v) for k, v in d.items()})


def history_parts(item_vectors: np.ndarray, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(last, recent), each (n_users, d) float32: the last history item's vector, and the decayed mean of the
    ``RECENT_ITEMS`` before it (zeros where a history is too short)."""
    n, d = len(histories), item_vectors.shape[1]
    last = np.zeros((n, d), dtype=np.float32)
    recent = np.zeros((n, d), dtype=np.float32)
    for u, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        if len(h):
            last[u] = item_vectors[h[-1]]
        before = h[-1 - RECENT_ITEMS : -1][::-1]  # nearest first
        if len(before):
            w = RECENT_DECAY ** np.arange(len(before), dtype=np.float32)
            recent[u] = (w[:, None] * item_vectors[before]).sum(axis=0) / w.sum()
    return last, recent


def mean_direction(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean of unit vectors (zeros for none, or when they cancel out)."""
    if not len(vectors):
        return np.zeros(vectors.shape[1], dtype=np.float32)
    m = vectors.mean(axis=0)
    norm = float(np.linalg.norm(m))
    return (m / norm if norm > 1e-12 else np.zeros_like(m)).astype(np.float32)


def text_directions(
    texts: Sequence[Sequence[str]], encode: Callable[[list[str]], np.ndarray], dim: int
) -> np.ndarray:
    """(n_users, d): each user's LLM query texts, each embedded once (``encode``: texts -> unit vectors),
    as their normalised mean (``mean_direction``; zeros for a user without texts)."""
    unique = list(dict.fromkeys(str(t) for ts in texts for t in ts))
    vecs = dict(zip(unique, np.asarray(encode(unique), dtype=np.float32), strict=True)) if unique else {}
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for u, ts in enumerate(texts):
        if len(ts):
            out[u] = mean_direction(np.stack([vecs[str(t)] for t in ts]))
    return out


@dataclass(frozen=True)
class QueryParts:
    """The query parts of a batch of users, each (n_users, d); ``vectors(weights)`` combines them."""

    last: np.ndarray
    recent: np.ndarray
    llm: np.ndarray

    @classmethod
    def build(
        cls, item_vectors: np.ndarray, histories: Sequence[np.ndarray], llm: np.ndarray | None = None
    ) -> QueryParts:
        """From the metadata item vectors, the histories (item indices, oldest first) and each user's LLM
        query direction (``mean_direction`` of their query vectors; None: no LLM queries)."""
        last, recent = history_parts(item_vectors, histories)
        return cls(last, recent, np.zeros_like(last) if llm is None else np.asarray(llm, dtype=np.float32))

    def stack(self) -> np.ndarray:
        """(3, n_users, d) in ``PARTS`` order."""
        return np.stack([self.last, self.recent, self.llm])

    def vectors(self, weights: RetrievalWeights) -> np.ndarray:
        """(n_users, d) query vectors: the weighted sum of the parts (element-wise, so a user's vector does
        not depend on the batch it is in)."""
        w = weights.parts()
        return (w[0] * self.last + w[1] * self.recent + w[2] * self.llm).astype(np.float32)


def item_vectors(metadata: np.ndarray, description: np.ndarray | None, enriched: float) -> np.ndarray:
    """The vectors retrieval scores items with: metadata + ``enriched`` x description, unit length."""
    if not enriched:
        return np.ascontiguousarray(metadata, dtype=np.float32)
    if description is None:
        raise ValueError(f"enriched weight {enriched} needs the description vectors; build them with "
                         "`q2rec index --text description`")  # fmt: skip
    v = metadata.astype(np.float32) + np.float32(enriched) * description.astype(np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
