"""Catalog enrichment on Ray Data: items.parquet -> an actor pool of LLM engines -> items_enriched.parquet.

    q2rec enrich --dataset ml-100k [--engine auto|vllm|transformers|openai] [--model PATH_OR_ID]
                               [--limit N] [--batch-size 64] [--replicas 1]

Every finished batch is written at once as its own Parquet part (temp file + rename) under
``enrich_parts/``. A rerun skips the items already in a part, so a crash loses at most the batches in
flight and no item is written twice. When every item is done the parts are merged into
``items_enriched.parquet`` (``item_id, description, source`` + attempts and token counts) and a summary goes
to ``enrich.json``. Each replica asks for one GPU on GPU clusters and half a CPU otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from actors.enricher import CatalogEnricher, EnrichmentSettings
from actors.llm.engine import EngineConfig
from actors.llm.factory import resolve_backend
from actors.prompts import ItemPrompt, ItemRecord, infer_domain
from data_prep import parts
from data_prep.artifacts import ArtifactPaths, write_json
from data_prep.llm_jobs import engine_for_replicas, engine_identity, outcome_counts, run_batches
from data_prep.schema import DataError

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "item_id",
    "description",
    "source",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "rejected",
]


@dataclass
class EnrichJobConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    domain: str | None = None  # movie | product | item; None: inferred from the item columns
    batch_size: int = 64
    replicas: int = 1
    cpus_per_replica: float = 0.5
    gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs
    limit: int | None = None  # only the first N catalog items (for slices and tests)
    max_reviews: int = 3


class EnrichBatch:
    """Ray Data actor: one engine per replica, loaded once, enriching a pandas batch per call."""

    def __init__(self, engine: dict[str, Any], domain: str, max_reviews: int) -> None:
        from actors.llm.factory import make_engine

        settings = EnrichmentSettings(prompt=ItemPrompt(domain=domain, max_reviews=max_reviews))
        self.enricher = CatalogEnricher(make_engine(EngineConfig(**engine)), settings)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from actors.prompts import ItemRecord

        items = [ItemRecord.from_mapping(r) for r in batch.to_dict("records")]
        return pd.DataFrame([asdict(e) for e in self.enricher.enrich(items)], columns=OUTPUT_COLUMNS)


def training_reviews(paths: ArtifactPaths, max_reviews: int) -> pd.Series | None:
    """Per item, up to ``max_reviews`` review texts from training interactions only (never valid/test)."""
    if not paths.reviews.is_file():
        return None
    reviews = pd.read_parquet(paths.reviews)
    train = pd.read_parquet(paths.split("train"))
    keys = ["user_id", "item_id", "timestamp"]
    train_reviews = reviews.merge(train[keys], on=keys, how="inner")
    train_reviews = train_reviews[train_reviews["review"].fillna("").str.len() > 0]
    return train_reviews.groupby("item_id", sort=False)["review"].agg(lambda s: list(s)[:max_reviews])


def read_parts(paths: ArtifactPaths) -> pd.DataFrame:
    return parts.read_parts(paths.enrich_parts, OUTPUT_COLUMNS)


def run_enrichment(paths: ArtifactPaths, cfg: EnrichJobConfig, progress: bool = True) -> dict[str, Any]:
    """Enrich every (or the first ``limit``) catalog item exactly once; returns the summary."""
    if not paths.items.is_file():
        raise DataError(f"{paths.items}: not found; run `q2rec prepare` first")
    items = pd.read_parquet(paths.items)
    if cfg.limit is not None:
        items = items.head(cfg.limit)
    domain = cfg.domain or infer_domain(items.columns)
    reviews = training_reviews(paths, cfg.max_reviews)
    if reviews is not None:
        items = items.assign(reviews=items["item_id"].map(reviews))
    settings = EnrichmentSettings(prompt=ItemPrompt(domain=domain, max_reviews=cfg.max_reviews))
    probe = ItemRecord.from_mapping(items.iloc[0].to_dict()) if len(items) else None
    set_aside = parts.claim(paths.enrich_parts, {
        "job": "enrich", "engine": engine_identity(cfg.engine), "settings": asdict(settings),
        "probe_prompt": settings.prompt.conversation(probe) if probe else None,
    })  # fmt: skip
    done = read_parts(paths)
    done_ids = set(done["item_id"].astype(str))
    todo = items[~items["item_id"].astype(str).isin(done_ids)]
    skipped = len(items) - len(todo)
    if skipped:
        log.info("resuming: %d of %d items already enriched", skipped, len(items))
    t0 = time.perf_counter()
    arrivals: list[tuple[float, int, int]] = []
    if len(todo):
        engine, gpus = engine_for_replicas(cfg.engine, cfg.gpus_per_replica)
        bar = tqdm(total=len(items), initial=skipped, desc="enrich", unit="item", disable=not progress)
        arrivals = run_batches(
            todo, EnrichBatch, {"engine": engine, "domain": domain, "max_reviews": cfg.max_reviews},
            batch_size=cfg.batch_size, replicas=cfg.replicas, cpus_per_replica=cfg.cpus_per_replica, gpus=gpus,
            folder=paths.enrich_parts, columns=OUTPUT_COLUMNS, bar=bar,
        )  # fmt: skip
        bar.close()
    seconds = time.perf_counter() - t0
    new_rows, new_tokens = sum(a[1] for a in arrivals), sum(a[2] for a in arrivals)
    summary = finalize(paths, items, cfg, domain, skipped, new_rows, new_tokens, seconds, set_aside)
    if len(arrivals) >= 2:  # steady state: from the first finished batch to the last (model load excluded)
        span = arrivals[-1][0] - arrivals[0][0]
        summary["steady_items_per_s"] = round(sum(a[1] for a in arrivals[1:]) / span, 2)
        summary["steady_completion_tokens_per_s"] = round(sum(a[2] for a in arrivals[1:]) / span, 1)
        write_json(paths.enrich_summary, summary)
    return summary


def finalize(
    paths: ArtifactPaths,
    items: pd.DataFrame,
    cfg: EnrichJobConfig,
    domain: str,
    skipped: int,
    new: int,
    new_tokens: int,
    secs: float,
    set_aside: int = 0,
) -> dict[str, Any]:
    """Merge the parts into ``items_enriched.parquet`` (catalog order) and write ``enrich.json``."""
    done = read_parts(paths)
    done["item_id"] = done["item_id"].astype(str)
    dup = int(done["item_id"].duplicated().sum())
    if dup:  # cannot happen with one writer; kept as a guard, and reported
        log.error("%d duplicate item rows in %s; keeping the first of each", dup, paths.enrich_parts)
        done = done.drop_duplicates("item_id")
    order = pd.Index(items["item_id"].astype(str))
    merged = done[done["item_id"].isin(order)].set_index("item_id").reindex(order)
    missing = int(merged["description"].isna().sum())
    if missing:
        raise RuntimeError(f"{missing} items have no enrichment after the run; rerun to finish them")
    merged = merged.reset_index()
    merged.to_parquet(paths.items_enriched, index=False)
    completion = int(merged["completion_tokens"].sum())
    summary = {
        "items": len(merged),
        "enriched_this_run": new,
        "skipped_already_done": skipped,
        "stale_parts_set_aside": set_aside,  # written with another prompt, settings or model
        **outcome_counts(merged),
        "prompt_tokens": int(merged["prompt_tokens"].sum()),
        "completion_tokens": completion,
        "seconds_this_run": round(secs, 2),
        "items_per_s": round(new / secs, 2) if new and secs else None,
        "completion_tokens_per_s": round(new_tokens / secs, 1) if new and secs else None,
        "duplicates_dropped": dup,
        "domain": domain,
        "engine": {
            "backend": resolve_backend(cfg.engine.backend),
            "model": cfg.engine.model or "packaged default",
        },
    }
    write_json(paths.enrich_summary, summary)
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers", "openai"])
    ap.add_argument("--model", help="local HF folder or hub id (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="for --engine openai")
    ap.add_argument("--limit", type=int, help="enrich only the first N items")
    ap.add_argument("--batch-size", type=int, default=64, help="items per engine call")
    ap.add_argument("--replicas", type=int, default=1, help="engine replicas in the actor pool")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--dtype", default="bfloat16")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    engine = EngineConfig(
        backend=args.engine, model=args.model, base_url=args.base_url, dtype=args.dtype,
        max_model_len=args.max_model_len, tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )  # fmt: skip
    cfg = EnrichJobConfig(engine=engine, batch_size=args.batch_size, replicas=args.replicas, limit=args.limit)
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    try:
        summary = run_enrichment(paths, cfg)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    speed = (f"{summary['items_per_s']} items/s, {summary['completion_tokens_per_s']} tokens/s this run"
             if summary["enriched_this_run"] else "nothing left to enrich this run")  # fmt: skip
    print(
        f"enriched {summary['items']} items ({summary['enriched_this_run']} this run, "
        f"{summary['skipped_already_done']} reused): {summary['llm']} llm, {summary['fallback']} fallback, "
        f"{summary['retried']} retried; {summary['completion_tokens']} tokens; {speed}"
    )
    if summary["stale_parts_set_aside"]:
        print(f"note: {summary['stale_parts_set_aside']} parts written with another prompt, settings or model "
              "were moved aside (enrich_parts.stale-*), not reused")  # fmt: skip
    return 0
