"""Content-only scoring, and the query-free ablation of the catalog text.

Every item is ranked for each user by cosine similarity between the embedded text of the user's last input
item and the item's (``actors.retriever.LastItemRetriever``, exact, so evaluation sees the full ranking).

    q2rec content --dataset ml-100k     # metadata-only vs enriched item text, valid and test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from actors.retriever import ExactRetriever, LastItemRetriever
from data_prep.artifacts import ArtifactPaths, write_json
from data_prep.corpus import Corpus
from data_prep.index import VARIANTS
from tune.evaluate import markdown_table
from tune.harness import evaluate_scorer, metric_context
from tune.metrics import BREAKDOWNS


def lastitem_scorer(item_vectors: np.ndarray):
    """A ``tune.harness`` scorer: every item's cosine with the last history item (``LastItemRetriever``'s
    exact full rows; users without history get zeros)."""
    lastitem = LastItemRetriever(ExactRetriever(item_vectors))

    def scorer(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return lastitem.exact().score_rows(lastitem.query_vectors(histories))

    return scorer


def ablation(paths: ArtifactPaths, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    corpus = Corpus.load(paths)
    results = {}
    for variant in variants:
        vectors = np.load(paths.item_vectors(variant))
        ctx = metric_context(corpus, vectors)
        scorer = lastitem_scorer(vectors)
        res = {s: evaluate_scorer(scorer, corpus, s, ctx) for s in ("valid", "test")}
        results[f"lastitem_{variant}"] = {s: {k: v for k, v in r.items() if k not in BREAKDOWNS}
                                          for s, r in res.items()}  # fmt: skip
    return results


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--out", type=Path)


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    present = tuple(v for v in VARIANTS if paths.item_vectors(v).is_file())
    if not present:
        print(
            f"error: no index under {paths.index_root}; run `q2rec index` first",
            file=sys.stderr,
        )
        return 2
    results = ablation(paths, present)
    print("Query-free content ablation: rank all items by cosine(last input item, item); "
          f"{paths.root.name}, chronological leave-one-out, full ranking, history masked.\n")  # fmt: skip
    print(markdown_table(results, ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "Coverage@10", "ILD@10")))
    if args.out:
        write_json(args.out, {"results": results})
    return 0
