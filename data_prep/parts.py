"""Resumable batch output: every finished batch becomes its own Parquet part, written atomically.

A rerun reads the parts to learn which keys are done and skips them, so a crash loses at most the
batches in flight and no row is ever written twice.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd


def read_parts(folder: Path, columns: list[str]) -> pd.DataFrame:
    files = sorted(Path(folder).glob("part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def write_part(folder: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as a new part: a temp file renamed into place, so a part is whole or absent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{final.name}.tmp"
    frame.to_parquet(tmp, index=False)
    tmp.replace(final)
    return final


def one_block_per_batch(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Input blocks for Ray Data: it merges a block's outputs before yielding them, and each finished batch
    has to reach the driver (and disk) on its own for a run to be resumable."""
    frame = frame.reset_index(drop=True)
    return [frame.iloc[i : i + batch_size] for i in range(0, len(frame), batch_size)]
