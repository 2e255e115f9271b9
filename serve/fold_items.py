"""Fold the items added online into the offline catalog, before the pipeline's next run.

    q2rec fold-items [--config serve/serve_config.yaml] [--dataset NAME] [--artifacts ROOT]

Reads the catalog log of the app's online store (the config's ``store``: the SQLite file under the
artifacts, or Redis) and appends every item added online to ``items.parquet``, in the order they were
added, after the items already there (``data_prep.prepare.append_items``). The manifest counts them, so
the next index and training runs (``make demo``, or their own commands) embed and train on them. Nothing
leaves the log: a replica skips an addition whose id its catalog already has, and withdrawals keep
applying. Without this step nothing is lost either: replicas keep re-adding the logged items at start.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from serve.run import DEFAULT_CONFIG, app_args


def fold(artifacts: Path, store_settings: dict | None = None) -> list[str]:
    """Append the store's online additions to the artifacts' catalog; the ids appended."""
    from data_prep.artifacts import ArtifactPaths
    from data_prep.prepare import append_items
    from serve.config import StoreSettings
    from serve.store import open_store

    store = open_store(StoreSettings(**(store_settings or {})), artifacts, 1)
    try:
        changes = asyncio.run(store.catalog_changes(0))
    finally:
        store.close()
    rows = [c.row for c in changes if c.op == "add" and c.row]
    return append_items(ArtifactPaths(artifacts), rows)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the Serve config the app runs with")


def command(a: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    args = app_args(a.config, a.dataset, a.artifacts)
    artifacts = Path(args.get("artifacts", "artifacts/ml-100k"))
    added = fold(artifacts, args.get("store"))
    print(f"{artifacts}: {len(added)} items added online appended to the catalog"
          + ("; now rerun the index and training stages (make demo)" if added else ""))  # fmt: skip
    return 0
