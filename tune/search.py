"""Ray Tune search of the fusion hyperparameters on the validation split.

    python -m tune.search --dataset ml-100k --trials 200 [--cf sasrec|ease] [--retrieval llm|llm+lastitem|lastitem]
                          [--methods fixed,adaptive,rrf] [--objective ndcg|ndcg+coverage|ndcg+novelty]
                          [--set sasrec.epochs=20]

Branch scores for the validation users are computed once (``tune.branches``) and shared with every trial
through the object store, so a trial only fuses and evaluates. OptunaSearch (TPE) proposes configs;
trials are single-step, so no early-stopping scheduler applies. The best config goes to
``fusion.json`` (for Serve and the report); trial results go under ``artifacts/<dataset>/tune``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from actors.rerank import FusionConfig
from actors.retrieval_branch import QUERY_MODES
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json, write_json
from tune.branches import BranchScores, evaluate_fused
from tune.metrics import MetricContext

log = logging.getLogger(__name__)

OBJECTIVES = {
    "ndcg": ["ndcg10"],
    "ndcg+coverage": ["ndcg10", "coverage10"],
    "ndcg+novelty": ["ndcg10", "novelty10"],
}
TUNE_KEYS = {"NDCG@10": "ndcg10", "Recall@10": "recall10", "Coverage@10": "coverage10", "Novelty@10": "novelty10",
             "TailRecall@10": "tailrecall10", "MRR": "mrr"}  # fmt: skip


METHODS = ("fixed", "adaptive", "rrf")
SEARCH_VERSION = "s3"  # bump when the space or the fusion formula changes: cached searches are then redone


def search_space(methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """The fusion search space; ``methods`` restricts the fusion method (e.g. only ``adaptive``)."""
    from ray import tune

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}")
    return {
        "method": tune.choice(list(methods)),
        "norm": tune.choice(["zscore", "minmax"]),
        "n": tune.choice([20, 50, 100, 200]),
        "alpha": tune.uniform(0.0, 1.0),
        "a": tune.uniform(-4.0, 4.0),
        "b": tune.uniform(-2.0, 2.0),
        "c": tune.uniform(-4.0, 4.0),
        "confidence": tune.choice(["margin", "entropy"]),
        "rrf_k": tune.choice([10.0, 30.0, 60.0]),
    }


def starting_points(methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """A few plain configs tried first (constant α of 0.5-0.9, catalog-wide z-scores), so TPE starts from
    sensible mixes instead of the extremes most random draws give."""
    base = {"norm": "zscore", "n": 200, "alpha": 0.5, "a": 0.0, "b": 0.0, "c": 0.0, "confidence": "margin",
            "rrf_k": 60.0}  # fmt: skip
    points = []
    for alpha in (0.5, 0.7, 0.9):
        if "fixed" in methods:
            points.append(base | {"method": "fixed", "alpha": alpha})
        if "adaptive" in methods:
            points.append(base | {"method": "adaptive", "a": float(np.log(alpha / (1 - alpha)))})
    if "rrf" in methods:
        points.append(base | {"method": "rrf"})
    return points


def to_fusion(config: dict[str, Any]) -> FusionConfig:
    names = {f.name for f in fields(FusionConfig)}
    return FusionConfig(**{k: v for k, v in config.items() if k in names})


def trial(config: dict[str, Any], branches: BranchScores, ctx: MetricContext) -> None:
    from ray import tune

    metrics = evaluate_fused(branches, to_fusion(config), ctx, ks=(10,))
    tune.report({TUNE_KEYS[k]: v for k, v in metrics.items() if k in TUNE_KEYS})


def run_search(
    branches: BranchScores,
    ctx: MetricContext,
    storage: Path,
    trials: int = 200,
    objective: str = "ndcg",
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    name: str = "fusion",
    concurrency: int = 1,
) -> dict[str, Any]:
    """Returns ``{"config": best FusionConfig dict, "valid": its metrics, "trials": n, "seconds": s}``.

    ``concurrency=1`` makes a seeded search reproducible: the same inputs give the same best config. With
    more trials at once TPE sees results in whatever order they finish, so reruns differ.
    """
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from data_prep.ray_cluster import init_ray

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    init_ray(quiet=True)
    metrics = OBJECTIVES[objective]
    modes = ["max"] * len(metrics)
    searcher = OptunaSearch(
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(metrics) > 1 else modes[0],
        seed=seed,
        points_to_evaluate=starting_points(methods),
    )
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_parameters(trial, branches=branches, ctx=ctx),
        param_space=search_space(methods),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=trials,
            reuse_actors=True,
            max_concurrent_trials=concurrency,
        ),  # fmt: skip
        run_config=tune.RunConfig(storage_path=str(storage.resolve()), name=name, verbose=0),
    )
    results = tuner.fit()
    seconds = time.perf_counter() - t0
    best = results.get_best_result(metric="ndcg10", mode="max")
    config = asdict(to_fusion(best.config))
    valid = {name: best.metrics[key] for name, key in TUNE_KEYS.items() if key in best.metrics}
    return {"config": config, "valid": valid, "trials": len(results), "seconds": round(seconds, 2),
            "objective": metrics, "methods": list(methods), "concurrency": concurrency}  # fmt: skip


def cached_search(
    paths: ArtifactPaths,
    corpus,
    cf: str,
    retrieval: str,
    variant: str,
    trials: int = 200,
    objective: str = "ndcg",
    methods: tuple[str, ...] = METHODS,
    cf_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_search`` on the valid branches of (cf, retrieval, variant), reused while its inputs are unchanged.

    The result is kept under ``tune/searches/`` keyed by the branch file (which fingerprints the model,
    index and queries), the methods, the trial count and the objective.
    """
    from tune.branches_store import branch_file, load_or_compute
    from tune.harness import metric_context

    branches = load_or_compute(paths, corpus, "valid", cf, retrieval, variant, cf_overrides=cf_overrides)
    stem = branch_file(paths, "valid", cf, retrieval, variant).stem
    space = fingerprint(
        SEARCH_VERSION, asdict(FusionConfig()), length=8
    )  # the search space and fusion fields
    key = f"{stem}_{'-'.join(methods)}_{trials}_{objective}_{space}"
    cache = paths.searches / f"{key}.json"
    if cache.is_file():
        return read_json(cache)
    out = run_search(branches, metric_context(corpus), paths.tune, trials, objective, methods=methods,
                     name=key)  # fmt: skip
    out |= {"cf": cf, "retrieval": retrieval, "variant": variant}
    write_json(cache, out)
    return out


def main(argv: list[str] | None = None) -> int:
    from data_prep.corpus import Corpus
    from data_prep.train import parse_overrides

    ap = argparse.ArgumentParser(prog="python -m tune.search", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--cf", default="sasrec", choices=["sasrec", "ease", "pop"])
    ap.add_argument("--retrieval", default="llm+lastitem", choices=QUERY_MODES,
                    help="retrieval query: the LLM query, the LLM query + the last item's text, or the last item's text")  # fmt: skip
    ap.add_argument("--variant", default="enriched", choices=["enriched", "metadata"], help="item text index")
    ap.add_argument("--methods", default=",".join(METHODS), help="fusion methods searched, comma-separated")
    ap.add_argument("--objective", default="ndcg", choices=sorted(OBJECTIVES))
    ap.add_argument("--out", type=Path, help="default: artifacts/<dataset>/fusion.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                    help="the config the CF model was trained with, as given to data_prep.train")  # fmt: skip
    ap.add_argument("--artifacts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    try:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        search_space(methods)  # validates --methods before any work
        overrides = parse_overrides(args.overrides).get(args.cf)
        corpus = Corpus.load(paths)
        out = cached_search(paths, corpus, args.cf, args.retrieval, args.variant, args.trials, args.objective,
                            methods, overrides)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.out or paths.fusion
    write_json(target, out)
    print(f"{out['trials']} trials in {out['seconds']}s; best valid NDCG@10 {out['valid']['NDCG@10']:.4f} with "
          f"{out['config']}; wrote {target}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
