"""FAISS retrieval over the whole item pool: inner product on unit vectors (cosine).

``FaissRetriever.search(query_vectors, k, exclude)`` returns ``(ids, scores)``, both (n, k') arrays with
k' = min(k, pool size - largest exclude list), so every row has k' real results: FAISS's -1 padding
never comes out, and a k larger than the pool is fine. Approximate indexes (HNSW, IVF) may return fewer
hits than asked; those rows are completed by an exact search over the stored vectors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

IndexKind = Literal["flat", "hnsw", "ivf"]


@dataclass
class IndexConfig:
    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0: about 4 * sqrt(n)
    ivf_nprobe: int = 16


def build_index(vectors: np.ndarray, config: IndexConfig):
    """A FAISS inner-product index over ``vectors`` (n, d), which should be unit length."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.kind == "ivf":
        nlist = config.ivf_nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(config.ivf_nprobe, nlist)
    else:
        raise ValueError(f"index kind must be flat, hnsw or ivf; got {config.kind!r}")
    index.add(vectors)
    return index


class FaissRetriever:
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
    def build(cls, vectors: np.ndarray, item_ids: Sequence[str], config: IndexConfig | None = None):
        config = config or IndexConfig()
        return cls(build_index(vectors, config), vectors, item_ids, config)

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(
        self, query_vectors: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per query, best first, skipping each row's ``exclude`` items."""
        q = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query_vectors have dimension {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        exclude = exclude if exclude is not None else [np.empty(0, dtype=np.int64)] * len(q)
        if len(exclude) != len(q):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(q)} queries")
        excl_sets = [np.unique(np.asarray(e, dtype=np.int64)) for e in exclude]
        max_excl = max((len(e) for e in excl_sets), default=0)
        k_out = min(k, self.size - max_excl)
        if k_out <= 0:
            return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
        scores, ids = self.index.search(q, min(self.size, k_out + max_excl))
        out_ids = np.empty((len(q), k_out), dtype=np.int64)
        out_scores = np.empty((len(q), k_out), dtype=np.float32)
        for row in range(len(q)):
            keep = (ids[row] >= 0) & ~np.isin(ids[row], excl_sets[row])
            got_ids, got_scores = ids[row][keep][:k_out], scores[row][keep][:k_out]
            if len(got_ids) < k_out:  # approximate index came back short: exact search for this row
                got_ids, got_scores = self._exact(q[row], k_out, excl_sets[row])
            out_ids[row], out_scores[row] = got_ids, got_scores
        return out_ids, out_scores

    def _exact(self, query: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.vectors @ query
        s[exclude] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        return top, s[top]

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        faiss.write_index(self.index, str(folder / "faiss.index"))
        (folder / "item_ids.json").write_text(json.dumps(self.item_ids.tolist()))
        info = {"config": asdict(self.config), "size": self.size, "dim": self.dim} | (meta or {})
        (folder / "index.json").write_text(json.dumps(info, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FaissRetriever:
        import faiss

        folder = Path(folder)
        if not (folder / "faiss.index").is_file():
            raise FileNotFoundError(f"{folder}: no faiss.index; run `python -m data_prep.index` first")
        info = json.loads((folder / "index.json").read_text())
        index = faiss.read_index(str(folder / "faiss.index"))
        config = IndexConfig(**info["config"])
        if config.kind == "hnsw":
            index.hnsw.efSearch = config.hnsw_ef_search
        elif config.kind == "ivf":
            index.nprobe = config.ivf_nprobe
        ids = json.loads((folder / "item_ids.json").read_text())
        return cls(index, np.load(folder / "vectors.npy"), ids, config)
