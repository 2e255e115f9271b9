"""Ray Tune search of the fusion hyperparameters on the validation split.

    q2rec search --dataset ml-100k --trials 200 [--cf sasrec|ease] [--weights auto|none|last,recent,llm,enriched]
                          [--methods fixed,adaptive,rrf] [--objective ndcg|ndcg+coverage|ndcg+novelty]
                          [--set sasrec.epochs=20]

Branch scores for the validation users are computed once (``tune.branches``) and shared with every trial
through the object store, so a trial only fuses and evaluates. A trial's config is the fusion
(``FusionConfig``) and the retrieval weights named by ``--weights`` (``actors.retrieval_query``; the others
stay at last 1, the rest 0): every weight's range starts at 0, so the search can turn the LLM's parts
off. ``auto`` tunes every part whose inputs exist (LLM queries, description vectors) where the catalog keeps
full rows, and none above. OptunaSearch (TPE) proposes configs; trials are single-step, so no
early-stopping scheduler applies. The best config goes to ``fusion.json`` (for Serve and the report) with
the best config of each method (for ``tune.selection``); Tune's experiment state goes under
``artifacts/<dataset>/tune``, without per-trial result files (``result_files``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from actors.fusion_file import FusionFile, TunedFusion
from actors.rerank import FusionConfig
from actors.retrieval_query import WEIGHTS, RetrievalWeights
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json, write_json
from tune.branches import BranchScores, evaluate_fused
from tune.metrics import MetricContext
from tune.selection import LLM_PARTS, candidates, select, use_name

log = logging.getLogger(__name__)

OBJECTIVES = {
    "ndcg": ["ndcg10"],
    "ndcg+coverage": ["ndcg10", "coverage10"],
    "ndcg+novelty": ["ndcg10", "novelty10"],
}
TUNE_KEYS = {"NDCG@10": "ndcg10", "Recall@10": "recall10", "Coverage@10": "coverage10", "Novelty@10": "novelty10",
             "TailRecall@10": "tailrecall10", "MRR": "mrr"}  # fmt: skip


METHODS = ("fixed", "adaptive", "rrf")
SEARCH_VERSION = "s5"  # bump when the space or the fusion formula changes: cached searches are then redone
WEIGHT_MAX = {"last": 1.0, "recent": 1.0, "llm": 1.0, "enriched": 1.5}  # each range is [0, max], step 0.05


@contextmanager
def result_files(on: bool) -> Iterator[None]:
    """Tune's per-trial result files (a CSV, a JSON and a TensorBoard file of every trial) on or off for the
    ``Tuner.fit`` inside. A search reads its results from memory, so they are off by default; Tune then warns
    at the end that each trial's files are missing, which is expected and silenced. The environment and the
    log level are restored after."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # read by Tuner.fit, in this process
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    saved, level = os.environ.get(key), log.level
    os.environ[key] = "0" if on else "1"
    if not on:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def check_weights(tuned: tuple[str, ...]) -> None:
    bad = [w for w in tuned if w not in WEIGHTS]
    if bad:
        raise ValueError(f"--weights: unknown retrieval weight(s) {bad}; choose from {list(WEIGHTS)}")


def search_space(
    methods: tuple[str, ...] = METHODS, tuned: tuple[str, ...] = (), unseen: bool = False
) -> dict[str, Any]:
    """The fusion search space; ``methods`` restricts the fusion method (e.g. only ``adaptive``), ``tuned``
    names the retrieval weights searched too (``w_<name>``, each from 0); with ``unseen`` (a catalog with
    items CF never saw in training) how far CF defers to retrieval on them (``FusionConfig.unseen``)."""
    from ray import tune as ray_tune  # not the project's own tune package

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}")
    check_weights(tuned)
    weights = {f"w_{w}": ray_tune.quniform(0.0, WEIGHT_MAX[w], 0.05) for w in tuned}
    cold = {"unseen": ray_tune.quniform(0.0, 1.0, 0.05)} if unseen else {}
    return (
        weights
        | cold
        | {
            "method": ray_tune.choice(list(methods)),
            "norm": ray_tune.choice(["zscore", "minmax"]),
            "n": ray_tune.choice([20, 50, 100, 200]),
            "alpha": ray_tune.uniform(0.0, 1.0),
            "a": ray_tune.uniform(-4.0, 4.0),
            "b": ray_tune.uniform(-2.0, 2.0),
            "c": ray_tune.uniform(-4.0, 4.0),
            "confidence": ray_tune.choice(["margin", "entropy"]),
            "rrf_k": ray_tune.choice([10.0, 30.0, 60.0]),
        }
    )


def starting_points(
    methods: tuple[str, ...], tuned: tuple[str, ...] = (), unseen: bool = False
) -> list[dict[str, Any]]:
    """A few plain configs tried first (constant α of 0.5-0.9, catalog-wide z-scores, the last item alone
    for retrieval), so TPE starts from sensible mixes instead of the extremes most random draws give; with
    tuned weights, the same once more with every tuned weight at 0.5."""
    base = {"norm": "zscore", "n": 200, "alpha": 0.5, "a": 0.0, "b": 0.0, "c": 0.0, "confidence": "margin",
            "rrf_k": 60.0} | ({"unseen": 0.0} if unseen else {})  # fmt: skip
    default = RetrievalWeights()
    plain = {f"w_{w}": getattr(default, w) for w in tuned}
    mixes = [plain] + ([{f"w_{w}": 0.5 for w in tuned}] if tuned else [])
    points = []
    for mix in mixes:
        for alpha in (0.5, 0.7, 0.9):
            if "fixed" in methods:
                points.append(base | mix | {"method": "fixed", "alpha": alpha})
            if "adaptive" in methods:
                points.append(base | mix | {"method": "adaptive", "a": float(np.log(alpha / (1 - alpha)))})
        if "rrf" in methods:
            points.append(base | mix | {"method": "rrf"})
    return points


def to_fusion(config: dict[str, Any]) -> FusionConfig:
    """The fusion config of a trial config (its other entries are the retrieval weights, ``w_<name>``)."""
    return FusionConfig(**{k: v for k, v in config.items() if not k.startswith("w_")})


def to_weights(config: dict[str, Any], base: RetrievalWeights) -> RetrievalWeights:
    """The retrieval weights of a trial config: its ``w_<name>`` entries, the rest from ``base``."""
    return replace(base, **{w: float(config[f"w_{w}"]) for w in WEIGHTS if f"w_{w}" in config})


def trial(config: dict[str, Any], branches: BranchScores, ctx: MetricContext, fixed: dict[str, Any]) -> None:
    from ray import tune as ray_tune  # not the project's own tune package

    weights = to_weights(config, branches.weights)
    metrics = evaluate_fused(branches, to_fusion(config | fixed), ctx, ks=(10,), weights=weights)
    ray_tune.report({TUNE_KEYS[k]: v for k, v in metrics.items() if k in TUNE_KEYS})


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
    tuned: tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
    write_result_files: bool = False,
) -> dict[str, Any]:
    """Returns ``{"config": best FusionConfig dict, "weights": its retrieval weights, "valid": its metrics,
    "by_method": the same for the best trial of each method, "trials": n, "seconds": s}``. ``tuned`` names
    the retrieval weights searched (the branches must keep part rows for them); ``fixed`` holds
    ``FusionConfig`` fields every trial keeps (``{"cf_candidates": 20}``: the serial architecture).
    ``write_result_files`` turns Tune's per-trial result files on (``result_files``).

    ``concurrency=1`` makes a seeded search reproducible: the same inputs give the same best config. With
    more trials at once TPE sees results in whatever order they finish, so reruns differ.
    """
    from ray import tune as ray_tune  # not the project's own tune package
    from ray.tune.search.optuna import OptunaSearch

    from runtime.ray_cluster import init_ray

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    if tuned and not branches.tunable:
        raise ValueError(f"retrieval weights {list(tuned)} cannot be tuned here: these branch scores hold one "
                         "retrieval answer, neither part rows nor candidates (tune.branches_store computes "
                         "them); search with --weights none")  # fmt: skip
    fixed = dict(fixed or {})
    unknown = set(fixed) - {f.name for f in fields(FusionConfig)}
    if unknown:
        raise ValueError(f"fixed: unknown FusionConfig field(s) {sorted(unknown)}")
    init_ray(quiet=True)
    cold = branches.unseen is not None and bool(branches.unseen.any())
    metrics = OBJECTIVES[objective]
    modes = ["max"] * len(metrics)
    searcher = OptunaSearch(
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(metrics) > 1 else modes[0],
        seed=seed,
        points_to_evaluate=starting_points(methods, tuned, cold),
    )
    t0 = time.perf_counter()
    tuner = ray_tune.Tuner(
        ray_tune.with_parameters(trial, branches=branches, ctx=ctx, fixed=fixed),
        param_space=search_space(methods, tuned, cold),
        tune_config=ray_tune.TuneConfig(
            search_alg=searcher,
            num_samples=trials,
            reuse_actors=True,
            max_concurrent_trials=concurrency,
        ),  # fmt: skip
        run_config=ray_tune.RunConfig(storage_path=str(storage.resolve()), name=name, verbose=0),
    )
    with result_files(write_result_files):
        results = tuner.fit()
    seconds = time.perf_counter() - t0

    def summary(result) -> dict[str, Any]:
        return {"config": asdict(to_fusion(result.config | fixed)),
                "weights": asdict(to_weights(result.config, branches.weights)),
                "valid": {k: result.metrics[m] for k, m in TUNE_KEYS.items() if m in result.metrics}}  # fmt: skip

    done = [r for r in results if r.metrics and "ndcg10" in r.metrics]
    by_method = {}
    for m in methods:  # the best trial of each method, for the selection rule (tune.selection)
        mine = [r for r in done if r.config["method"] == m]
        if mine:
            by_method[m] = summary(max(mine, key=lambda r: r.metrics["ndcg10"]))
    best = summary(results.get_best_result(metric="ndcg10", mode="max"))
    return best | {"by_method": by_method, "tuned_weights": list(tuned), "trials": len(results),
                   "seconds": round(seconds, 2), "objective": metrics, "methods": list(methods),
                   "concurrency": concurrency, "fixed": fixed}  # fmt: skip


def available_weights(paths: ArtifactPaths) -> tuple[str, ...]:
    """The retrieval weights whose inputs exist: last and recent always, llm with user queries, enriched
    with description vectors."""
    out = ["last", "recent"]
    if paths.user_queries.is_file():
        out.append("llm")
    if paths.item_vectors("description").is_file():
        out.append("enriched")
    return tuple(out)


def resolve_weights(spec: str, paths: ArtifactPaths, branches: BranchScores) -> tuple[str, ...]:
    """``--weights``: ``auto`` (every available one where part rows are kept, else none), ``none``, or names."""
    if spec == "none":
        return ()
    if spec == "auto":
        return available_weights(paths) if branches.tunable else ()
    tuned = tuple(w.strip() for w in spec.split(",") if w.strip())
    check_weights(tuned)
    missing = [w for w in tuned if w not in available_weights(paths)]
    if missing:
        raise ValueError(f"--weights {missing}: no input for them; llm needs `q2rec queries`, "
                         "enriched `q2rec index --text description`")  # fmt: skip
    return tuned


def search_cache(
    paths: ArtifactPaths,
    corpus,
    cf: str,
    tuned: tuple[str, ...],
    trials: int = 200,
    objective: str = "ndcg",
    methods: tuple[str, ...] = METHODS,
    cf_overrides: dict[str, Any] | None = None,
    base: RetrievalWeights | None = None,
    fixed: dict[str, Any] | None = None,
) -> Path:
    """Where ``cached_search`` keeps the search of these arguments (``tuned`` resolved to names): under
    ``tune/searches/``, keyed by the branch file (which fingerprints the trained model's config, so the
    config ``cf_overrides`` names, the vectors and the queries), the tuned weights, the base weights, the
    fixed fields, the methods, the trial count and the objective."""
    from tune.branches_store import branch_file

    stem = branch_file(paths, "valid", cf, corpus).stem
    # the search space, the fusion fields and the base weights
    space = fingerprint(SEARCH_VERSION, asdict(FusionConfig()), asdict(base or RetrievalWeights()), list(tuned),
                        fixed or {}, length=8)  # fmt: skip
    serial = f"_serial{fixed['cf_candidates']}" if (fixed or {}).get("cf_candidates") else ""
    key = f"{stem}_{'-'.join(methods)}_{'-'.join(tuned) or 'fixed'}{serial}_{trials}_{objective}_{space}"
    return paths.searches / f"{key}.json"


def cached_search(
    paths: ArtifactPaths,
    corpus,
    cf: str,
    tuned: tuple[str, ...] | str = "auto",
    trials: int = 200,
    objective: str = "ndcg",
    methods: tuple[str, ...] = METHODS,
    cf_overrides: dict[str, Any] | None = None,
    base: RetrievalWeights | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_search`` on the valid branches of ``cf``, tuning the retrieval weights ``tuned`` (names, or a
    ``--weights`` spec) from ``base``, with the fusion fields ``fixed``; reused while its inputs are unchanged
    (``search_cache``)."""
    from tune.branches_store import load_or_compute
    from tune.harness import metric_context

    base = base or RetrievalWeights()
    branches = None
    if isinstance(tuned, str):
        branches = load_or_compute(paths, corpus, "valid", cf, base, cf_overrides=cf_overrides)
        tuned = resolve_weights(tuned, paths, branches)
    cache = search_cache(paths, corpus, cf, tuned, trials, objective, methods, cf_overrides, base, fixed)
    if cache.is_file():
        return read_json(cache)
    if branches is None:
        branches = load_or_compute(paths, corpus, "valid", cf, base, cf_overrides=cf_overrides)
    out = run_search(branches, metric_context(corpus), paths.tune, trials, objective, methods=methods,
                     name=cache.stem, tuned=tuned, fixed=fixed)  # fmt: skip
    out |= {"cf": cf}
    write_json(cache, out)
    return out


def _search_task(
    paths: ArtifactPaths, corpus, cf: str, tuned: tuple[str, ...], kwargs: dict[str, Any]
) -> None:
    cached_search(paths, corpus, cf, tuned, **kwargs)


def run_searches(
    paths: ArtifactPaths, corpus, jobs: list[tuple[str, tuple[str, ...], dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``cached_search(paths, corpus, cf, tuned, **kwargs)`` for each job ``(cf, tuned, kwargs)``, in order.

    Those not cached yet run first as Ray tasks, as many at once as the cluster has CPUs: each is still one
    trial at a time with its own seed, so each gives the result it gives alone, while together they keep
    every core busy (on ML-100K the four searches of ``q2rec search`` took 68 s, against 107 s of trials
    one after the other). The tasks run on this node (they read the artifacts); each job's valid branch
    scores must exist already: tasks only read them. On a one-CPU cluster, or with one search to run, it
    runs here.
    """
    import ray

    from runtime.ray_cluster import init_ray

    todo = {}  # cache file -> job: a search asked for twice runs once
    for cf, tuned, kwargs in jobs:
        cache = search_cache(paths, corpus, cf, tuned, **kwargs)
        if not cache.is_file():
            todo[cache] = (cf, tuned, kwargs)
    at_once = 1
    if len(todo) > 1:
        init_ray(quiet=True)
        at_once = min(len(todo), int(ray.cluster_resources().get("CPU", 1)))
    if at_once > 1:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on this node, which holds the artifacts the tasks read and write; the trials hold the CPUs (one
        # each, on any node: they get the branch scores through the object store)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        task = ray.remote(num_cpus=0, scheduling_strategy=here)(_search_task)
        corpus_ref = ray.put(corpus)
        running, refs = [], []
        for cf, tuned, kwargs in todo.values():
            if len(running) >= at_once:
                _, running = ray.wait(running, num_returns=1)
            running.append(task.remote(paths, corpus_ref, cf, tuned, kwargs))
            refs.append(running[-1])
        ray.get(refs)
    return [cached_search(paths, corpus, cf, tuned, **kwargs) for cf, tuned, kwargs in jobs]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--cf", default="sasrec", choices=["sasrec", "ease", "als", "pop"])
    ap.add_argument("--weights", default="auto",
                    help="retrieval weights searched with the fusion: auto (every one whose input exists, where "
                    "the catalog keeps full rows), none, or names from last,recent,llm,enriched")  # fmt: skip
    ap.add_argument("--methods", default=",".join(METHODS), help="fusion methods searched, comma-separated")
    ap.add_argument("--objective", default="ndcg", choices=sorted(OBJECTIVES))
    ap.add_argument("--out", type=Path, help="default: artifacts/<dataset>/fusion.json")
    from actors.cf.overrides import add_set_argument  # actors.cf loads torch: not in every Tune trial worker

    add_set_argument(ap, "the config the CF model was trained with, as given to q2rec train")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    from actors.cf.overrides import parse_overrides
    from tune.harness import evaluation_corpus

    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    try:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        search_space(methods)  # validates --methods before any work
        if args.weights not in ("auto", "none"):
            check_weights(tuple(w.strip() for w in args.weights.split(",") if w.strip()))
        overrides = parse_overrides(args.overrides).get(args.cf)
        corpus = evaluation_corpus(paths)
        out = select_fusion(
            paths, corpus, args.cf, args.weights, args.trials, args.objective, methods, overrides
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.out or paths.fusion
    out.save(target)
    best = out.best
    print(f"{out.trials} trials in {out.seconds}s; selected {out.selected} (valid NDCG@10 "
          f"{out.valid['NDCG@10']:.4f}): {out.config}, retrieval weights {out.weights}; best on valid "
          f"{best['name']} ({best['valid_ndcg10']:.4f}); wrote {target}")  # fmt: skip
    return 0


def simpler_sets(tuned: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``tuned`` and every set without some of its LLM parts (``llm``, ``enriched``), simplest first."""
    base = tuple(w for w in tuned if w not in LLM_PARTS)
    llm = [w for w in tuned if w in LLM_PARTS]
    return [base + extra for r in range(len(llm) + 1) for extra in combinations(llm, r)]


def choose(
    paths,
    corpus,
    cf: str,
    tuned: tuple[str, ...],
    valid: BranchScores,
    ctx: MetricContext,
    search_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The searches of ``tuned`` and of every simpler set (the same without some of its LLM parts), each
    cached (``cached_search``), then ``tune.selection.select`` over all their candidates. Returns
    ``select``'s answer plus ``searches`` (use name -> search)."""
    sets = simpler_sets(tuned)
    done = run_searches(paths, corpus, [(cf, t, search_kwargs or {}) for t in sets])
    searches = {use_name(t): search for t, search in zip(sets, done, strict=True)}
    pool = [c for name, search in searches.items() for c in candidates(name, search)]
    return select(pool, valid, ctx) | {"searches": searches}


def select_fusion(
    paths: ArtifactPaths,
    corpus,
    cf: str,
    weights: str,
    trials: int,
    objective: str,
    methods: tuple[str, ...],
    cf_overrides: dict[str, Any] | None,
) -> FusionFile:
    """What ``fusion.json`` holds: the search of ``weights`` (a ``--weights`` spec) and of every simpler set,
    and the config the one-standard-error rule selects among them (``choose``), with its
    validation metrics; ``best`` is the best on validation."""
    from tune.branches_store import load_or_compute
    from tune.harness import metric_context

    valid = load_or_compute(paths, corpus, "valid", cf, cf_overrides=cf_overrides)
    tuned = resolve_weights(weights, paths, valid)
    kwargs = {"trials": trials, "objective": objective, "methods": methods, "cf_overrides": cf_overrides}
    ctx = metric_context(corpus)
    choice = choose(paths, corpus, cf, tuned, valid, ctx, kwargs)
    sel = choice["selected"]
    tuned_fusion = TunedFusion.of(sel, "the selected candidate")
    metrics = evaluate_fused(valid, tuned_fusion.config, ctx, ks=(10,), weights=tuned_fusion.weights)
    main = choice["searches"][use_name(tuned)]
    return FusionFile(config=tuned_fusion.config, weights=tuned_fusion.weights, selected=sel["name"],
                      valid={k: metrics[k] for k in TUNE_KEYS if k in metrics}, best=choice["best"],
                      selection=choice["table"], tuned_weights=list(tuned), cf=cf,
                      trials=sum(s["trials"] for s in choice["searches"].values()),
                      seconds=round(sum(s["seconds"] for s in choice["searches"].values()), 2),
                      objective=main["objective"], methods=main["methods"])  # fmt: skip
