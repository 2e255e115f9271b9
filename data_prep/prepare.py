"""Prepare a dataset: load it, write the canonical Parquet files, and split it.

    q2rec prepare --dataset ml-100k                       # packaged, offline
    q2rec prepare --dataset ml-1m --path ~/data/ml-1m      # GroupLens folder
    q2rec prepare --dataset beauty --reviews R.json.gz --meta M.json.gz
    q2rec prepare --dataset /path/to/folder                # interactions.csv + items.csv

Writes ``interactions.parquet``, ``items.parquet``, ``train/valid/test.parquet`` and ``prepare.json``
(counts, the drop report, the split summary) under ``artifacts/<dataset>/``. A rerun with the same
arguments reuses the files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.artifacts import ArtifactPaths, read_json, write_json
from data_prep.loaders import load_amazon, load_generic_folder, load_ml100k_packaged, load_movielens
from data_prep.schema import DataError, RawDataset
from data_prep.split import leave_one_out

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str = "ml-100k"
    path: str | None = None
    reviews: str | None = None
    meta: str | None = None
    kcore: int = 0
    cold_items: float = 0.0  # a seeded fraction of items without training interactions (data_prep.split)

    def __post_init__(self) -> None:
        if not 0.0 <= self.cold_items < 1.0:
            raise DataError(f"--cold-items must be a fraction in [0, 1), got {self.cold_items!r}")

    @property
    def name(self) -> str:
        """The artifacts folder name: the dataset name, or a generic folder's base name; a cold-item split
        gets its own folder (``ml-100k-cold0.1``)."""
        p = Path(self.dataset)
        base = p.name if (p.is_dir() or "/" in self.dataset) else self.dataset
        return f"{base}-cold{self.cold_items:g}" if self.cold_items else base


def load_dataset(cfg: PrepareConfig) -> RawDataset:
    if cfg.reviews or cfg.meta:
        if not (cfg.reviews and cfg.meta):
            raise DataError("Amazon datasets need both --reviews and --meta")
        return load_amazon(cfg.reviews, cfg.meta, name=cfg.name)
    if cfg.path:
        return load_movielens(cfg.path)
    if Path(cfg.dataset).is_dir():
        return load_generic_folder(cfg.dataset)
    if cfg.dataset == "ml-100k":
        return load_ml100k_packaged()
    raise DataError(
        f"--dataset {cfg.dataset!r}: not a folder, and only 'ml-100k' ships with the project; "
        "pass --path for GroupLens files or --reviews/--meta for Amazon"
    )


def already_prepared(paths: ArtifactPaths, config: dict) -> bool:
    """Whether ``paths`` holds a dataset prepared with exactly ``config``."""
    return paths.is_prepared() and read_json(paths.prepare_manifest).get("config") == config


def write_prepared(
    ds: RawDataset, paths: ArtifactPaths, config: dict, kcore: int = 0, cold_items: float = 0.0
) -> ArtifactPaths:
    """Write a validated dataset in the canonical layout, split it (``cold_items``: the fraction of items
    without training interactions), and record ``config`` in prepare.json."""
    paths.root.mkdir(parents=True, exist_ok=True)
    ds.interactions.to_parquet(paths.interactions, index=False)
    ds.items.to_parquet(paths.items, index=False)
    if ds.reviews is not None:
        ds.reviews.to_parquet(paths.reviews, index=False)
    split = leave_one_out(ds.interactions, kcore_k=kcore, cold_items=cold_items)
    for name in ("train", "valid", "test"):
        getattr(split, name).to_parquet(paths.split(name), index=False)
    manifest = {
        "config": config,
        "users": int(ds.interactions["user_id"].nunique()),
        "items": len(ds.items),
        "interactions": len(ds.interactions),
        "dropped": ds.dropped.to_dict(),
        "notes": ds.notes,
        "split": split.summary(),
    }
    if split.cold_items:
        manifest["cold_item_ids"] = list(split.cold_items)
    write_json(paths.prepare_manifest, manifest)
    log.info("prepared %s: %s", paths.root, {k: v for k, v in manifest.items() if k != "cold_item_ids"})
    return paths


def append_items(paths: ArtifactPaths, rows: list[dict]) -> list[str]:
    """Append catalog rows (items added online, in the order they were added) to ``items.parquet``, after
    every item already there, so no item's index changes; ids already in the catalog are skipped. The
    manifest counts them (``online_items``), so the stages keyed on it (index, training) run again.
    Returns the ids appended."""
    import pandas as pd

    items = pd.read_parquet(paths.items)
    have = set(items["item_id"].astype(str))
    new = [r for r in rows if str(r["item_id"]) not in have]
    for r in new:
        foreign = sorted(set(r) - set(items.columns))
        if foreign or not str(r.get("title") or "").strip():
            why = f"field(s) {foreign} not in the catalog" if foreign else "no title"
            raise DataError(f"{paths.items}: item {r['item_id']!r} cannot be appended: {why}")
    if not new:
        return []
    added = pd.DataFrame(new, columns=items.columns).astype(items.dtypes.to_dict())
    pd.concat([items, added], ignore_index=True).to_parquet(paths.items, index=False)
    manifest = read_json(paths.prepare_manifest)
    manifest["items"] = len(items) + len(added)
    manifest["online_items"] = manifest.get("online_items", 0) + len(added)
    write_json(paths.prepare_manifest, manifest)
    log.info("%s: %d items added online appended to the catalog", paths.items, len(added))
    return [str(r["item_id"]) for r in new]


def prepare(
    cfg: PrepareConfig, artifacts_root: str | Path | None = None, force: bool = False
) -> ArtifactPaths:
    """Load, validate, write and split one dataset. Returns its artifact paths."""
    paths = ArtifactPaths.for_dataset(cfg.name, artifacts_root)
    if not force and already_prepared(paths, asdict(cfg)):
        log.info("%s: already prepared, reusing", paths.root)
        return paths
    return write_prepared(load_dataset(cfg), paths, asdict(cfg), cfg.kcore, cfg.cold_items)


def ensure_prepared(dataset: str, artifacts_root: str | Path | None = None) -> ArtifactPaths:
    """Artifacts for ``dataset``: an already prepared name, or prepare it (ml-100k, generic folders)."""
    cfg = PrepareConfig(dataset=dataset)
    paths = ArtifactPaths.for_dataset(cfg.name, artifacts_root)
    if paths.is_prepared():
        return paths
    return prepare(cfg, artifacts_root)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--path", help="folder with the official GroupLens ML-100K or ML-1M files")
    ap.add_argument("--reviews", help="Amazon reviews JSON lines (.json or .json.gz)")
    ap.add_argument("--meta", help="Amazon metadata lines (.json or .json.gz)")
    ap.add_argument("--kcore", type=int, default=0, help="k-core filter before splitting (0 = off)")
    ap.add_argument("--cold-items", type=float, default=0.0, metavar="F",
                    help="remove every training interaction of a seeded fraction F of the items (they stay in the "
                    "catalog and can be targets); written to <dataset>-coldF")  # fmt: skip
    ap.add_argument("--force", action="store_true", help="redo even if the artifacts exist")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    try:
        cfg = PrepareConfig(args.dataset, args.path, args.reviews, args.meta, args.kcore, args.cold_items)
        paths = prepare(cfg, args.artifacts, force=args.force)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = read_json(paths.prepare_manifest)
    print(
        f"{paths.root}: {m['users']} users, {m['items']} items, {m['interactions']} interactions; "
        f"split {m['split']}; dropped {m['dropped'] or 'nothing'}"
    )
    return 0
