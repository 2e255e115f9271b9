"""Resumable batch output: every finished batch becomes its own Parquet part, written atomically.

A rerun reads the parts to learn which keys are done and skips them, so a crash loses at most the
batches in flight and no row is ever written twice. A folder also records what its parts were written with
(``fingerprint.json``: prompt, settings, model); a rerun under a different fingerprint sets the old parts
aside instead of reusing them, so a changed prompt or model never resumes from stale rows.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.artifacts import fingerprint

log = logging.getLogger(__name__)
MARKER = "fingerprint.json"


def claim(folder: Path, spec: Mapping[str, Any]) -> int:
    """Make ``folder`` hold only parts written under ``spec``; returns how many parts were set aside.

    Parts written under another spec (or before folders recorded one) are moved, folder and all, to
    ``<folder>.stale-<their fingerprint>``, never deleted, and the move is logged.
    """
    folder = Path(folder)
    fp = fingerprint(spec)
    marker = folder / MARKER
    old = json.loads(marker.read_text())["fingerprint"] if marker.is_file() else "unrecorded"
    files = list(folder.glob("part-*.parquet"))
    moved = 0
    if files and old != fp:
        aside = folder.with_name(f"{folder.name}.stale-{old}")
        n = 1
        while aside.exists():
            n += 1
            aside = folder.with_name(f"{folder.name}.stale-{old}-{n}")
        folder.rename(aside)
        moved = len(files)
        log.warning("%s: %d parts were written with another prompt, settings or model (fingerprint %s, now "
                    "%s); moved to %s and starting afresh", folder, moved, old, fp, aside)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    if old != fp:  # (a folder without a marker has old == "unrecorded")
        tmp = folder / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"fingerprint": fp, "spec": spec}, indent=2, sort_keys=True, default=str))
        tmp.replace(marker)
    return moved


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
    # without pandas' own metadata: Ray Data hands over Arrow-backed columns (a list column's dtype
    # "list<item: string>[pyarrow]"), which that metadata records and pandas then cannot read back
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), tmp)
    tmp.replace(final)
    return final


def one_block_per_batch(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Input blocks for Ray Data: it merges a block's outputs before yielding them, and each finished batch
    has to reach the driver (and disk) on its own for a run to be resumable."""
    frame = frame.reset_index(drop=True)
    return [frame.iloc[i : i + batch_size] for i in range(0, len(frame), batch_size)]
