"""The collaborative-filtering model contract: batch-first, arrays in, arrays out.

A model is fitted on per-user item sequences (dense item indices, chronological) and scores any batch of
histories against the whole catalog. ``save`` writes ``config.json`` beside the weights; ``load`` reads
both back. Every model passes the shared contract test in ``tests/actors/test_cf_contract.py``.

A model whose scores are inner products of a user vector and item vectors (SASRec) may carry an item
index (``build_index``; an IVF index above ``IndexConfig.exact_max_items`` items): ``rank`` then searches
it instead of scoring every item, so a request's work does not grow with the catalog. The index is saved
beside the weights with its recall@10 against exact ranking, measured on real users' vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import sparse

from actors.branch import BranchOutput, RowMode
from actors.ranking import mask_items, ndcg_at_k, target_ranks, topk
from actors.retriever import FaissRetriever, IndexConfig

Histories = Sequence[np.ndarray]
GIB = 1024**3


# the most bytes one batch of catalog-wide score rows may take (scores and their masked copy)
SCORE_BATCH_BYTES = 256 * 1024**2


def score_batch_size(n_items: int, most: int = 1024) -> int:
    """Users per batch of catalog-wide scoring, so a batch's rows stay within ``SCORE_BATCH_BYTES``
    (1,024 users up to 32,768 items; 32 users at a million)."""
    return max(1, min(most, SCORE_BATCH_BYTES // (8 * max(n_items, 1))))


class ModelTooLarge(ValueError):
    """A model that cannot be fitted at this size within its memory limit; said before the fit starts."""


def physical_memory() -> int:
    """Bytes of RAM this process may use: the machine's, or its cgroup's limit when lower (containers)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return ram
    return min(ram, int(limit)) if limit.isdigit() else ram


@dataclass
class ValidationSet:
    """Held-out next items, for models that select hyperparameters or stop early on NDCG@10."""

    histories: Histories
    targets: np.ndarray

    def sample(self, n: int, seed: int = 0) -> ValidationSet:
        """At most ``n`` of these users (a fixed random sample, in their order); all of them when n <= 0."""
        if n <= 0 or len(self.targets) <= n:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self.targets), n, replace=False))
        return ValidationSet([self.histories[i] for i in rows], self.targets[rows])

    def ndcg10(self, model: CFModel, batch_size: int | None = None) -> float:
        batch_size = batch_size or score_batch_size(model.n_items)
        ranks = []
        for start in range(0, len(self.targets), batch_size):
            h = self.histories[start : start + batch_size]
            scores = mask_items(model.score(h), h)
            ranks.append(target_ranks(scores, self.targets[start : start + batch_size]))
        return ndcg_at_k(np.concatenate(ranks), 10)


class CFModel(ABC):
    """Base class of every CF model. Subclasses set ``name`` and ``Config`` and implement the abstract parts."""

    name: ClassVar[str]
    Config: ClassVar[type]
    WEIGHTS: ClassVar[str] = "weights.npz"
    INDEX: ClassVar[str] = "index"  # the item index's folder, beside the weights
    # config fields that change how a fit runs, not what it learns (left out of a trained model's fingerprint)
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ()
    # every score is an inner product ``user_vectors(h) @ item_vectors().T`` (so an item index can rank)
    FACTORISED: ClassVar[bool] = False

    @classmethod
    def for_remote_fit(cls, config: Any, num_cpus: float) -> Any:
        """``config`` set up for a fit in another process with ``num_cpus`` CPUs (threads, no progress
        bar); the default changes nothing."""
        return config

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.n_items = 0
        self.fit_info: dict[str, Any] = {}
        self.index: FaissRetriever | None = None  # item index that ``rank`` searches (``build_index``)

    def memory_needed(self, n_users: int, n_items: int) -> int | None:
        """Peak bytes a fit on this many users and items needs, for models whose memory grows faster than
        the data (None: no estimate, it grows with the data)."""
        return None

    def check_fits(self, n_users: int, n_items: int, limit_bytes: int | None = None) -> None:
        """Raise ``ModelTooLarge`` (naming the size, the memory needed and a model that fits) when a fit
        would need more than ``limit_bytes`` (default: the config's ``max_memory_gb``, else 80% of RAM)."""
        self.wanted_index(n_items)  # a bad index kind is an error before the fit, not after it
        need = self.memory_needed(n_users, n_items)
        if need is None:
            return
        if limit_bytes is None:
            gb = getattr(self.config, "max_memory_gb", None)
            limit_bytes = int(gb * GIB) if gb is not None else int(0.8 * physical_memory())
        if need > limit_bytes:
            raise ModelTooLarge(
                f"{self.name} on {n_users:,} users x {n_items:,} items needs about {need / GIB:,.1f} GiB, over "
                f"the limit of {limit_bytes / GIB:,.1f} GiB ({self.name}.max_memory_gb); {self.too_large_hint}"
            )

    too_large_hint: ClassVar[str] = ""

    @abstractmethod
    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        """Learn from training sequences over ``n_items`` items; ``valid`` drives model selection if given."""

    @abstractmethod
    def score(self, histories: Histories) -> np.ndarray:
        """(len(histories), n_items) float32 scores; higher is better. Histories are not masked here."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None: ...

    def shared_scores(self) -> np.ndarray | None:
        """(n_items,) float32 scores, where every history gets the same (``score`` is this row tiled): what a
        full-ranking evaluation ranks once for all users. None (the default): scores depend on the history."""
        return None

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) float32 item vectors of a ``FACTORISED`` model."""
        raise NotImplementedError(f"{self.name} is not a factorised model: it has no item vectors")

    def user_vectors(self, histories: Histories) -> np.ndarray:
        """(len(histories), d) float32 user vectors of a ``FACTORISED`` model."""
        raise NotImplementedError(f"{self.name} is not a factorised model: it has no user vectors")

    def wanted_index(self, n_items: int | None = None) -> IndexConfig | None:
        """The item index this model's config asks for at its catalog size (or ``n_items``): its ``index``
        field, default auto (IVF above ``IndexConfig.exact_max_items`` items); None: exact ranking (also for
        a model that is not factorised)."""
        if not self.FACTORISED:
            return None
        kind = getattr(self.config, "index", "auto")
        if kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"{self.name}.index must be auto, flat, ivf or hnsw; got {kind!r}")
        config = IndexConfig(kind=kind).resolved(self.n_items if n_items is None else n_items)
        return None if config.kind == "flat" else config

    def index_is_current(self) -> bool:
        """Whether the index held (or its absence) is the one ``wanted_index`` asks for."""
        want = self.wanted_index()
        have = self.index.config.kind if self.index is not None else None
        return (want.kind if want is not None else None) == have

    def build_index(self, queries: Histories | None = None) -> FaissRetriever | None:
        """Build the index ``wanted_index`` asks for and have ``rank`` search it (None, and no index: exact
        ranking). Its recall@10 against exact ranking is measured on the user vectors of ``queries``
        (histories; default: catalog items as queries) and kept in the index's ``build_info``."""
        config = self.wanted_index()
        self.index = None
        if config is None:
            return None
        q = self.user_vectors(queries) if queries is not None and len(queries) else None
        t0 = time.perf_counter()
        self.index = FaissRetriever.build(self.item_vectors(), np.arange(self.n_items).astype(str), config, q)
        self.index.build_info["build_s"] = round(time.perf_counter() - t0, 1)
        return self.index

    def recommend(
        self, histories: Histories, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (item indices, scores) per history, best first. ``k`` larger than the catalog is clipped."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.score(histories)
        if exclude_seen:
            mask_items(scores, histories)
        ids = topk(scores, k)
        return ids, np.take_along_axis(scores, ids, axis=1)

    def rank(
        self,
        histories: Histories,
        n: int,
        exclude: Histories | None = None,
        rows: RowMode = "full",
        batch_size: int | None = None,
    ) -> BranchOutput:
        """The CF branch's answer: top-``n`` per history as a ``BranchOutput``, ``exclude`` (default: the
        histories themselves) never listed, with the full score rows or their statistics by ``rows``.
        Histories are scored ``batch_size`` at a time (default: ``score_batch_size`` of the catalog); with
        an item index, the top-n is the index's search with the user vectors (no row of every item)."""
        batch_size = batch_size or score_batch_size(self.n_items)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        exclude = histories if exclude is None else exclude
        if len(exclude) != len(histories):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(histories)} histories")
        parts = []
        for start in range(0, len(histories), batch_size):
            h, e = histories[start : start + batch_size], exclude[start : start + batch_size]
            if self.index is not None:
                parts.append(self.index.search(self.user_vectors(h), n, exclude=e, rows=rows))
            else:
                parts.append(BranchOutput.from_rows(mask_items(self.score(h), e), n, rows))
        if not parts:
            return BranchOutput.empty(0)
        k = min(p.n for p in parts)  # a batch whose users have fewer unmasked items lists fewer
        return BranchOutput.concat([p.head(k) for p in parts])

    def _check_histories(self, histories: Histories) -> None:
        if self.n_items == 0:
            raise RuntimeError(f"{self.name}: call fit() or load() before score()")
        for i, h in enumerate(histories):
            if len(h) and (np.min(h) < 0 or np.max(h) >= self.n_items):
                raise ValueError(
                    f"histories[{i}]: item index out of range [0, {self.n_items}): {list(h)[:10]}"
                )

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (model name, config, n_items, fit info) and the weights into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save_weights(path / self.WEIGHTS)
        self.save_index(path)
        meta = {
            "model": self.name,
            "n_items": self.n_items,
            "config": asdict(self.config),
            "fit_info": self.fit_info,
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    def save_index(self, path: str | Path) -> None:
        """Write the item index into ``path/index`` (the vectors stay in the weights), or remove an old one."""
        folder = Path(path) / self.INDEX
        if folder.exists():
            shutil.rmtree(folder)
        if self.index is not None:
            self.index.save(folder, {"model": self.name}, with_vectors=False)

    def _save_weights(self, file: Path) -> None:
        np.savez(file, **self._state())

    def _load_weights(self, file: Path) -> dict[str, np.ndarray]:
        with np.load(file) as z:
            return {k: z[k] for k in z.files}

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        if meta["model"] != cls.name:
            raise ValueError(f"{path}: holds a {meta['model']!r} model, not {cls.name!r}")
        model = cls(cls.Config(**meta["config"]))
        model.n_items = int(meta["n_items"])
        model.fit_info = meta.get("fit_info", {})
        model._set_state(model._load_weights(path / cls.WEIGHTS))
        if (path / cls.INDEX / "faiss.index").is_file():
            model.index = FaissRetriever.load(path / cls.INDEX, model.item_vectors())
        return model


def interaction_matrix(sequences: Histories, n_items: int) -> sparse.csr_matrix:
    """Binary (n_users, n_items) float32 sparse matrix of who interacted with what (an item seen twice
    counts once)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate(sequences).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
    x = sparse.csr_matrix(
        (np.ones(len(indices), np.float32), indices, indptr), shape=(len(sequences), n_items)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x
