"""Benchmark: several LLM queries per user against one, in cost and in quality, in one run.

    python bench/query_samples.py [--artifacts artifacts] [--dataset ml-100k] [--samples 1,5] [--use 1,2,3,5]
                                  [--trials 100] [--engine auto]

Needs ``make demo``'s artifacts (prepared data, enriched items, the metadata index, a trained SASRec). Cost:
the batch query job (``data_prep.queries``, valid and test queries of every user) runs once per
``--samples`` value into a scratch copy of the dataset, timed, with its prompt and completion tokens; the
first value is the baseline. Quality: from the largest run, each user's first ``--use`` queries (the greedy
one first) make the LLM query part; for each, the fused SASRec row with the LLM queries
(``fused_sasrec_query``: the last item, the items before it and the queries, weights searched from 0 with the
fusion on validation) is searched with Ray Tune and its best-on-validation config applied to test. The
table gives valid and test NDCG@10 and the test difference from one query with its 95% paired bootstrap
interval; the retrieval branch alone (the queries only) is shown beside it, with the user's query texts
pooled (the normalised mean of their vectors, what the system uses) and with the max over the texts'
similarities instead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

COPIED = ("interactions.parquet", "items.parquet", "train.parquet", "valid.parquet", "test.parquet",
          "prepare.json", "items_enriched.parquet", "index/metadata", "models/sasrec")  # fmt: skip


def scratch_copy(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for name in COPIED:
        src = source / name
        if not src.exists():
            raise FileNotFoundError(f"{src}: run `make demo` first")
        (shutil.copytree if src.is_dir() else shutil.copy)(src, target / name)


def query_cost(source: Path, scratch: Path, samples: int, engine: str) -> tuple[dict, Path]:
    from actors.llm.engine import EngineConfig
    from data_prep.artifacts import ArtifactPaths
    from data_prep.queries import QueryJobConfig, run_queries

    paths = ArtifactPaths(scratch / f"samples{samples}" / source.name)
    scratch_copy(source, paths.root)
    t0 = time.perf_counter()
    s = run_queries(
        paths, QueryJobConfig(engine=EngineConfig(backend=engine), samples=samples), progress=False
    )
    wall = time.perf_counter() - t0
    q = pd.read_parquet(paths.user_queries)
    return {"samples": samples, "seconds": wall, "queries": len(q), "texts_per_query": q["queries"].map(len).mean(),
            "prompt_tokens": q["prompt_tokens"].sum() / len(q),
            "completion_tokens": q["completion_tokens"].sum() / len(q), "llm": s["llm"]}, paths.user_queries  # fmt: skip


def quality(source: Path, scratch: Path, queries: Path, use: int, trials: int) -> dict:
    from actors.fusion_file import TunedFusion
    from actors.retrieval_query import RetrievalWeights
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus
    from tune.harness import metric_context
    from tune.rows import branch_pair, fused_metrics, list_metrics
    from tune.search import cached_search

    paths = ArtifactPaths(scratch / f"use{use}" / source.name)
    scratch_copy(source, paths.root)
    q = pd.read_parquet(queries)
    q["queries"] = q["queries"].map(lambda ts: list(ts)[:use])
    q.to_parquet(paths.user_queries, index=False)
    corpus = Corpus.load(paths)
    ctx = metric_context(corpus)
    search = cached_search(paths, corpus, "sasrec", ("last", "recent", "llm"), trials)
    tuned = TunedFusion.of(search, "search")
    cfg, w = tuned.config, tuned.weights
    valid, test = branch_pair(paths, corpus, "sasrec", {})
    fused = fused_metrics(test, cfg, ctx, w)
    alone = RetrievalWeights(last=0.0, llm=1.0)
    qv, qt = (list_metrics(b.with_weights(alone).retrieval.ids, b, ctx) for b in (valid, test))
    mv, mt = (max_pooled(paths, corpus, stage, b, ctx) for stage, b in (("valid", valid), ("test", test)))
    return {"use": use, "valid": search["valid"]["NDCG@10"], "test": fused["NDCG@10"], "ranks": fused["target_ranks"],
            "weights": search["weights"], "query_valid": qv["NDCG@10"], "query_test": qt["NDCG@10"],
            "max_valid": mv["NDCG@10"], "max_test": mt["NDCG@10"]}  # fmt: skip


def max_pooled(paths, corpus, stage: str, b, ctx) -> dict:
    """The LLM queries alone with max pooling: an item's score is the largest similarity between it and any
    of the user's query texts (history items never listed)."""
    from actors.branch import BranchOutput
    from actors.encoder import TextEncoder
    from tune.branches_store import query_texts
    from tune.rows import list_metrics

    texts = query_texts(paths, corpus, stage)
    unique = list(dict.fromkeys(t for ts in texts for t in ts))
    vecs = dict(zip(unique, np.asarray(TextEncoder().encode(unique), dtype=np.float32), strict=True))
    items = b.parts.metadata
    rows = np.stack([(np.stack([vecs[t] for t in ts]) @ items.T).max(axis=0) for ts in texts])
    rows[b.parts.mask_rows, b.parts.mask_cols] = -np.inf
    return list_metrics(BranchOutput.from_rows(rows, b.retrieval.n, "topn").ids, b, ctx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--samples", default="1,5", help="queries written per user, one job run each")
    ap.add_argument("--use", default="1,2,3,5", help="queries used per user, from the largest run")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--engine", default="auto")
    args = ap.parse_args()
    from runtime.ray_cluster import init_ray
    from tune.metrics import paired_bootstrap

    source = Path(args.artifacts) / args.dataset
    samples = [int(x) for x in args.samples.split(",")]
    uses = [int(x) for x in args.use.split(",") if int(x) <= max(samples)]
    init_ray(quiet=True)
    with tempfile.TemporaryDirectory(prefix="q2rec-samples-") as tmp:
        scratch = Path(tmp)
        costs, files = [], {}
        for n in samples:
            print(f"query job, {n} per user ...", flush=True)
            cost, files[n] = query_cost(source, scratch, n, args.engine)
            costs.append(cost)
        base = costs[0]
        print(
            f"\n{args.dataset}: the batch query job (valid and test queries of every user), engine {args.engine}\n"
        )
        print(
            "| queries per user | wall s | vs one | texts kept per user | prompt tokens | completion tokens |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for c in costs:
            print(f"| {c['samples']} | {c['seconds']:.0f} | {c['seconds'] / base['seconds']:.2f}x | "
                  f"{c['texts_per_query']:.2f} | {c['prompt_tokens']:.0f} | {c['completion_tokens']:.1f} |")  # fmt: skip
        rows = [quality(source, scratch, files[max(samples)], u, args.trials) for u in uses]
    one = rows[0]
    print(f"\nfused_sasrec_query with each user's first k queries ({args.trials} trials on valid, best config on "
          "test; test difference from k = 1 with its 95% paired bootstrap interval):\n")  # fmt: skip
    print("| k | valid NDCG@10 | test NDCG@10 | vs k = 1 | llm weight | queries alone, pooled: valid | test "
          "| max over queries: valid | test |")  # fmt: skip
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        pb = paired_bootstrap(r["ranks"], one["ranks"])
        print(f"| {r['use']} | {r['valid']:.4f} | {r['test']:.4f} | {pb['diff']:+.4f} [{pb['ci95_low']:+.4f}, "
              f"{pb['ci95_high']:+.4f}] | {r['weights']['llm']:.2f} | {r['query_valid']:.4f} | {r['query_test']:.4f} | "
              f"{r['max_valid']:.4f} | {r['max_test']:.4f} |")  # fmt: skip
    print(f"\nsummary: {costs[-1]['samples']} queries per user cost {costs[-1]['seconds'] / base['seconds']:.2f}x the "
          f"job time of one; test NDCG@10 " + ", ".join(f"k={r['use']} {r['test']:.4f}" for r in rows))  # fmt: skip
    return 0 if np.isfinite(one["test"]) else 1


if __name__ == "__main__":
    sys.exit(main())
