"""Evaluate CF models on a prepared dataset with full ranking, and write JSON plus a markdown table.

    q2rec evaluate --dataset ml-100k --models pop,ease,sasrec --out artifacts/ml-100k/eval.json

``--dataset`` is a prepared dataset name, ``ml-100k`` (prepared on the fly from the packaged files), or a
folder holding ``interactions.csv`` + ``items.csv``. The models are loaded as ``q2rec train``
saved them; ``--set sasrec.epochs=20`` names the config to load (the one it was trained with).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from actors.cf import MODELS
from actors.cf.overrides import add_set_argument, parse_overrides
from data_prep.artifacts import ArtifactPaths, read_json, write_json
from data_prep.corpus import Corpus
from data_prep.prepare import ensure_prepared
from data_prep.schema import DataError
from training.cf import ModelNotTrained, load_trained
from tune.harness import evaluate_scorer, metric_context, model_scorer
from tune.metrics import BREAKDOWNS, DEFAULT_KS, GROUP_SHARE, HEAD_FRACTION

log = logging.getLogger(__name__)

TABLE_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR", "Coverage@10", "Novelty@10", "ILD@10",
                 "TailRecall@10")  # fmt: skip


def protocol(paths: ArtifactPaths, corpus: Corpus, ks: tuple[int, ...]) -> dict[str, Any]:
    manifest = read_json(paths.prepare_manifest)
    return {
        "dataset": paths.root.name,
        "users": corpus.n_users,
        "items": corpus.n_items,
        "interactions": manifest["interactions"],
        "split": "chronological leave-one-out per user: last = test, second-to-last = valid, rest = train; "
        "users with < 3 interactions are train-only",
        "kcore": manifest["config"].get("kcore", 0),
        "valid_users": int(len(corpus.eval_users("valid"))),
        "test_users": int(len(corpus.eval_users("test"))),
        "ranking": f"full ranking over all {corpus.n_items} items; the input history is masked "
        "(valid: train items; test: train items + the valid item); ties go to the lower item index",
        "ks": list(ks),
        "novelty": "mean -log2(pop_i / n_train_users), pop_i = distinct training users of item i (min 1)",
        "tail": f"TailRecall counts users whose target is outside the {int(HEAD_FRACTION * 100)}% most popular items",
        "recall": "one target per user, so Recall@K = HitRate@K",
        "popularity_groups": f"items ordered by training popularity (distinct users): head = the most popular "
        f"holding the first {GROUP_SHARE:.0%} of training interactions, tail = the least popular holding the "
        f"last {GROUP_SHARE:.0%} (and every item unseen in training), mid = the rest; by_target_popularity "
        "gives Recall@10 and NDCG@10 of the users whose target is in each group, and of those whose target "
        "is cold (no training interaction) or warm",
        "arp": "ARP@K = mean training popularity (distinct users) of the recommended items; TailShare@K = "
        "share of recommended items in the tail group",
        "cold_items": manifest["split"].get("cold_items", 0),
    }


def markdown_table(results: dict[str, dict[str, dict[str, float]]], metrics=TABLE_METRICS) -> str:
    present = [
        m for m in metrics if any(m in r.get(s, {}) for r in results.values() for s in ("valid", "test"))
    ]
    lines = ["| method | split | " + " | ".join(present) + " |", "|---|---|" + "---:|" * len(present)]
    for name, res in results.items():
        for stage in ("valid", "test"):
            if stage in res:
                cells = [f"{res[stage][m]:.4f}" if m in res[stage] else "" for m in present]
                lines.append(f"| {name} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    dataset: str,
    models: list[str],
    out: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    artifacts_root: str | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    item_embeddings: Path | None = None,
) -> dict[str, Any]:
    """Prepare (if needed), load each trained model, evaluate on valid and test; returns the report dict."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"--models: unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    paths = ensure_prepared(dataset, artifacts_root)
    corpus = Corpus.load(paths)
    emb = np.load(item_embeddings) if item_embeddings else None
    ctx = metric_context(corpus, emb)
    results: dict[str, Any] = {}
    timings: dict[str, dict[str, float]] = {}
    for name in models:
        t0 = time.perf_counter()
        model = load_trained(paths, name, (overrides or {}).get(name))
        t1 = time.perf_counter()
        scorer = model_scorer(model)
        res = {stage: evaluate_scorer(scorer, corpus, stage, ctx, ks, label=f"{name} {stage}")
               for stage in ("valid", "test")}  # fmt: skip
        results[name] = {
            "valid": {k: v for k, v in res["valid"].items() if k not in BREAKDOWNS},
            "test": {k: v for k, v in res["test"].items() if k not in BREAKDOWNS},
            **{b: {s: res[s][b] for s in res} for b in BREAKDOWNS},
            "fit_info": {k: v for k, v in model.fit_info.items() if k != "history"},
        }
        timings[name] = {
            "load_s": round(t1 - t0, 2),
            "evaluate_s": round(time.perf_counter() - t1, 3),
        }
        log.info(
            "%s: test %s", name, {k: round(results[name]["test"][k], 4) for k in ("Recall@10", "NDCG@10")}
        )
    report = {"protocol": protocol(paths, corpus, ks), "results": results, "timings": timings}
    if out:
        write_json(Path(out), report)
    return report


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--models", default="pop,ease,sasrec", help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    add_set_argument(ap, "the config a model was trained with, as given to q2rec train (repeatable)")
    ap.add_argument("--ks", default="10,20", help="cut-offs, comma-separated")
    ap.add_argument("--item-embeddings", type=Path, help=".npy (n_items, d) item vectors, enables ILD@K")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        report = run(args.dataset, models, args.out, parse_overrides(args.overrides), args.artifacts, ks,
                     args.item_embeddings)  # fmt: skip
    except (DataError, ValueError, ModelNotTrained) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    p = report["protocol"]
    print(f"\n{p['dataset']}: {p['users']} users, {p['items']} items; {p['split']}; {p['ranking']}\n")
    print(markdown_table(report["results"]))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0
