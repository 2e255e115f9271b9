"""Batch user-query generation on Ray Data, leakage-safe, cached by (user, history hash).

    q2rec queries --dataset ml-100k [--engine auto|vllm|transformers|openai] [--model ...]

Two query sets: ``valid`` queries are written from the training history (everything before the last two
interactions); ``test`` queries from the training history plus the validation item (everything before the
last one). The target is never in its own prompt. Rows go to ``user_queries.parquet``
(``user_id, stage, key, query, source, ...``) where ``key`` = user + hash of the exact history used, so a
rerun (or Serve) reuses a query whenever the history is unchanged. Batches are written as resumable parts.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from actors.llm.engine import EngineConfig
from actors.prompts import infer_domain
from actors.user_query import QuerySettings, UserQueryWriter, history_items, history_key
from data_prep import parts
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json, write_json
from data_prep.corpus import Corpus
from data_prep.llm_jobs import engine_for_replicas, engine_identity, outcome_counts, run_batches
from data_prep.schema import DataError

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "stage", "key", "query", "source", "attempts", "prompt_tokens", "completion_tokens",
           "rejected", "queries"]  # fmt: skip


def query_requests(corpus: Corpus, stages: tuple[str, ...] = ("valid", "test")) -> pd.DataFrame:
    """One row per (user, stage): the user, the history item indices used, and the cache key."""
    rows = []
    ids = corpus.item_ids
    for stage in stages:
        users = corpus.eval_users(stage)
        for u, hist in zip(users, corpus.histories(stage, users), strict=True):
            user_id = str(corpus.user_ids[u])
            rows.append((user_id, stage, history_key(user_id, ids[hist].tolist()), hist.astype(np.int64)))
    return pd.DataFrame(rows, columns=["user_id", "stage", "key", "history"])


class CatalogView:
    """Item rows and enriched descriptions, for building HistoryItems from item indices."""

    def __init__(self, root: str) -> None:
        paths = ArtifactPaths(Path(root))
        items = pd.read_parquet(paths.items)
        self.rows = items.to_dict("records")
        enriched = paths.items_enriched
        self.descriptions = (
            pd.read_parquet(enriched).set_index("item_id")["description"].to_dict()
            if enriched.is_file()
            else {}
        )

    def history(self, indices) -> list:
        return history_items([self.rows[int(i)] for i in indices], self.descriptions)


class QueryBatch:
    """Ray Data actor: one engine and one catalog view per replica."""

    def __init__(self, root: str, engine: dict[str, Any], settings: dict[str, Any]) -> None:
        from actors.llm.factory import make_engine

        self.catalog = CatalogView(root)
        self.writer = UserQueryWriter(make_engine(EngineConfig(**engine)), QuerySettings(**settings))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        histories = [self.catalog.history(h) for h in batch["history"]]
        queries = self.writer.write(histories)
        out = batch[["user_id", "stage", "key"]].reset_index(drop=True).copy()
        for col in ("query", "source", "attempts", "prompt_tokens", "completion_tokens", "rejected"):
            out[col] = [getattr(q, "text" if col == "query" else col) for q in queries]
        out["queries"] = [q.texts for q in queries]  # the query first, then the valid extra samples
        return out[COLUMNS]


@dataclass
class QueryJobConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    batch_size: int = 128
    replicas: int = 1
    cpus_per_replica: float = 0.5
    recent: int = 5
    samples: int = 1  # queries per user (QuerySettings.samples)
    limit_users: int | None = None
    users: int | None = None  # a seeded sample of this many users (with both targets); None: every user
    seed: int = 0


def sample_users(corpus: Corpus, n: int, seed: int) -> np.ndarray:
    """The ids of a seeded sample of ``n`` users that have both a valid and a test target (sorted); every
    such user when there are at most ``n``."""
    both = np.intersect1d(corpus.eval_users("valid"), corpus.eval_users("test"))
    if n < 1:
        raise ValueError(f"the user sample needs at least 1 user, got {n}")
    if n < len(both):
        both = np.sort(np.random.default_rng(seed).choice(both, n, replace=False))
    return np.sort(corpus.user_ids[both])


def query_sample(paths: ArtifactPaths) -> list[str] | None:
    """The users a sampled query run wrote for (``--users``), or None when the queries cover every
    evaluable user (or were never written). Reports and searches evaluate every row on this sample."""
    if not paths.user_queries.is_file() or not paths.queries_summary.is_file():
        return None
    if not read_json(paths.queries_summary).get("sample"):
        return None
    return sorted(pd.read_parquet(paths.user_queries, columns=["user_id"])["user_id"].astype(str).unique())


def query_job_spec(
    paths: ArtifactPaths, cfg: QueryJobConfig, settings: dict[str, Any], requests: pd.DataFrame
) -> dict[str, Any]:
    """What the queries depend on besides the history: engine, settings, the prompt as rendered for one
    user, and the enriched descriptions the prompts quote. A change to any of them starts the parts afresh."""
    catalog = CatalogView(str(paths.root))
    writer = UserQueryWriter(None, QuerySettings(**settings))
    probe = catalog.history(requests["history"].iloc[0]) if len(requests) else []
    return {"job": "queries", "engine": engine_identity(cfg.engine), "settings": asdict(writer.settings),
            "probe_prompt": writer.conversation(probe),
            "descriptions": fingerprint(catalog.descriptions) if catalog.descriptions else None}  # fmt: skip


def run_queries(paths: ArtifactPaths, cfg: QueryJobConfig, progress: bool = True) -> dict[str, Any]:
    """Write the valid and test query of every evaluable user exactly once; returns the summary."""
    if not paths.is_prepared():
        raise DataError(f"{paths.root}: not prepared; run `q2rec prepare` first")
    corpus = Corpus.load(paths)
    requests = query_requests(corpus)
    if cfg.limit_users is not None:
        keep = set(requests["user_id"].drop_duplicates().head(cfg.limit_users))
        requests = requests[requests["user_id"].isin(keep)]
    if cfg.users is not None:
        requests = requests[requests["user_id"].isin(set(sample_users(corpus, cfg.users, cfg.seed)))]
    settings = {"domain": infer_domain(pd.read_parquet(paths.items).columns), "recent": cfg.recent,
                "samples": cfg.samples}  # fmt: skip
    set_aside = parts.claim(paths.query_parts, query_job_spec(paths, cfg, settings, requests))
    done = parts.read_parts(paths.query_parts, COLUMNS)
    todo = requests[~requests["key"].isin(set(done["key"]))]
    t0 = time.perf_counter()
    arrivals: list[tuple[float, int, int]] = []
    if len(todo):
        engine, gpus = engine_for_replicas(cfg.engine)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc="queries", unit="query",
                   disable=not progress)  # fmt: skip
        arrivals = run_batches(
            todo, QueryBatch, {"root": str(paths.root.resolve()), "engine": engine, "settings": settings},
            batch_size=cfg.batch_size, replicas=cfg.replicas, cpus_per_replica=cfg.cpus_per_replica, gpus=gpus,
            folder=paths.query_parts, columns=COLUMNS, bar=bar,
        )  # fmt: skip
        bar.close()
    new, new_tokens = sum(a[1] for a in arrivals), sum(a[2] for a in arrivals)
    secs = time.perf_counter() - t0
    allq = parts.read_parts(paths.query_parts, COLUMNS).drop_duplicates("key")
    allq = allq[allq["key"].isin(set(requests["key"]))]
    missing = len(set(requests["key"]) - set(allq["key"]))
    if missing:
        raise RuntimeError(f"{missing} queries missing after the run; rerun to finish them")
    allq.to_parquet(paths.user_queries, index=False)
    sample = None if cfg.users is None else {"users": int(requests["user_id"].nunique()), "seed": cfg.seed}
    summary = {
        "queries": len(allq),
        "written_this_run": new,
        "reused": len(requests) - len(todo),
        "stale_parts_set_aside": set_aside,  # written with another prompt, settings, model or enrichment
        **outcome_counts(allq),
        "completion_tokens": int(allq["completion_tokens"].sum()),
        "completion_tokens_per_user_query": round(float(allq["completion_tokens"].mean()), 1),
        "samples": cfg.samples,
        "queries_per_user_query": round(float(allq["queries"].map(len).mean()), 2),
        "sample": sample,
        "seconds_this_run": round(secs, 2),
        "queries_per_s": round(new / secs, 2) if new else None,
        "completion_tokens_per_s": round(new_tokens / secs, 1) if new else None,
    }
    write_json(paths.queries_summary, summary)
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers", "openai"])
    ap.add_argument("--model", help="local HF folder or hub id (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="for --engine openai")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--recent", type=int, default=5, help="history items shown in the prompt")
    ap.add_argument("--samples", type=int, default=1,
                    help="queries per user: the greedy one plus samples - 1 sampled ones, asked in one request")  # fmt: skip
    ap.add_argument("--limit-users", type=int, help="only the first N users (slices and tests)")
    ap.add_argument("--users", type=int,
                    help="a seeded sample of N users (both stages); searches and reports then evaluate every "
                         "row on these users")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="the seed of --users")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    cfg = QueryJobConfig(
        engine=EngineConfig(backend=args.engine, model=args.model, base_url=args.base_url),
        batch_size=args.batch_size, recent=args.recent, samples=args.samples, limit_users=args.limit_users,
        users=args.users, seed=args.seed,
    )  # fmt: skip
    if args.samples < 1:
        print(f"error: --samples must be >= 1, got {args.samples}", file=sys.stderr)
        return 2
    try:
        s = run_queries(ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts), cfg)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{s['queries']} queries ({s['written_this_run']} written, {s['reused']} reused): {s['llm']} llm, "
          f"{s['fallback']} fallback; {s['completion_tokens_per_user_query']} tokens per query")  # fmt: skip
    if s["stale_parts_set_aside"]:
        print(f"note: {s['stale_parts_set_aside']} parts written with another prompt, settings, model or "
              f"enrichment were moved aside (query_parts.stale-*), not reused")  # fmt: skip
    return 0
