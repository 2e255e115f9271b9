"""Where every stage reads and writes: one artifacts directory per dataset, every file named here.

<root>/interactions.parquet items.parquet reviews.parquet prepare.json    prepare
       train.parquet valid.parquet test.parquet                        split
       items_enriched.parquet enrich.json enrich_parts/                  enrich
       index/<variant>/ (faiss.index, vectors.npy, item_ids.json, index.json)   index
       models/<name>/ (config.json + weights)                           train
       user_queries.parquet queries.json query_parts/                   queries
       branches/<stage>_<cf>_<retrieval>_<variant>_<fingerprint>.npz    branch caches
       tune/ (Ray Tune results), tune/searches/<key>.json, fusion.json  search
       report/                                                          report
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("artifacts")


@dataclass(frozen=True)
class ArtifactPaths:
    """The files of one dataset's artifacts directory (default ``artifacts/<dataset>``)."""

    root: Path

    @classmethod
    def for_dataset(cls, name: str, root: str | Path | None = None) -> ArtifactPaths:
        base = Path(root) if root is not None else Path(os.environ.get("Q2REC_ARTIFACTS", DEFAULT_ROOT))
        return cls(base / name)

    @property
    def interactions(self) -> Path:
        return self.root / "interactions.parquet"

    @property
    def items(self) -> Path:
        return self.root / "items.parquet"

    @property
    def reviews(self) -> Path:
        return self.root / "reviews.parquet"

    @property
    def prepare_manifest(self) -> Path:
        return self.root / "prepare.json"

    def split(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    def model_dir(self, model: str) -> Path:
        return self.root / "models" / model

    @property
    def items_enriched(self) -> Path:
        return self.root / "items_enriched.parquet"

    @property
    def enrich_summary(self) -> Path:
        return self.root / "enrich.json"

    @property
    def enrich_parts(self) -> Path:
        return self.root / "enrich_parts"

    @property
    def user_queries(self) -> Path:
        return self.root / "user_queries.parquet"

    @property
    def queries_summary(self) -> Path:
        return self.root / "queries.json"

    @property
    def query_parts(self) -> Path:
        return self.root / "query_parts"

    @property
    def index_root(self) -> Path:
        return self.root / "index"

    def index_dir(self, variant: str) -> Path:
        """One FAISS index folder per item-text variant (``enriched``, ``metadata``)."""
        return self.index_root / variant

    def item_vectors(self, variant: str) -> Path:
        return self.index_dir(variant) / "vectors.npy"

    @property
    def branches(self) -> Path:
        return self.root / "branches"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def searches(self) -> Path:
        return self.tune / "searches"

    @property
    def fusion(self) -> Path:
        return self.root / "fusion.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def is_prepared(self) -> bool:
        return self.prepare_manifest.is_file() and all(
            p.is_file()
            for p in (self.items, self.interactions, *(self.split(s) for s in ("train", "valid", "test")))
        )


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


_file_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks), remembered per (path, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_digests:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _file_digests[key] = h.hexdigest()
    return _file_digests[key]


def _canonical(value: Any) -> Any:
    if isinstance(value, Path):
        return {"file": value.name, "sha256": file_digest(value)} if value.is_file() else {"file": value.name}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def fingerprint(*parts: Any, length: int = 16) -> str:
    """The one cache key of every stage: a short sha256 of ``parts`` as canonical JSON (sorted keys).

    A ``Path`` part stands for its file's content (and its name), so a key changes when an input file's
    bytes change and never because a file was touched or moved; a missing file counts as absent.
    """
    value = _canonical(parts[0] if len(parts) == 1 else list(parts))
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
