"""Where every stage reads and writes: one artifacts directory per dataset."""

from __future__ import annotations

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
