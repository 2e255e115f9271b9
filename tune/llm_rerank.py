"""The serial LLM reranker's answers: CF's top-K reranked zero-shot by the LLM, on a seeded sample of users.

    q2rec llm-rerank --dataset ml-100k [--cf sasrec,ease] [--k 20] [--users 200] [--seed 0]
                              [--engine auto] [--pointwise-engine same|transformers] [--model PATH] [--history 10]

The serial architecture the parallel design is measured against: the LLM sees only CF's top-K
(``actors.llm_rerank``). An LLM pass per user costs seconds on a CPU, so it runs on a seeded sample of the
evaluable users (the same users at valid and test) and the report compares every row on that sample. For each
backbone, per stage: ``listwise`` (the list as CF ranked it) and ``pointwise`` (each candidate's title scored
after the history); at test also ``listwise`` with the list reversed, for the position bias. The engine runs
in one Ray task (with the engine's GPUs where the cluster has them). Writes ``llm_rerank/<cf>.npz`` (per stage
and mode, the reranked item ids, and the sample's positions among the evaluable users) and
``llm_rerank/<cf>.json`` (settings, tokens and seconds per user, how many numbers the listwise answers named,
the position bias); the report's ``serial_<cf>_llm`` row reads them. Reused while the sample, the engine, the
settings and the CF lists are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from actors.cf.overrides import add_set_argument, parse_overrides
from actors.llm.engine import EngineConfig
from actors.llm_rerank import RerankSettings, position_bias
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json, write_json
from data_prep.corpus import Corpus
from tune.harness import evaluation_corpus

log = logging.getLogger(__name__)
DEFAULT_K = 20
PASSES = (("valid", "listwise", False), ("valid", "pointwise", False), ("test", "listwise", False),
          ("test", "listwise", True), ("test", "pointwise", False))  # (stage, mode, reversed)  # fmt: skip


def rerank_files(paths: ArtifactPaths, cf: str) -> tuple[Path, Path]:
    folder = paths.root / "llm_rerank"
    return folder / f"{cf}.npz", folder / f"{cf}.json"


def sample_positions(corpus: Corpus, users: int, seed: int) -> np.ndarray:
    """Sorted positions, among the test stage's evaluable users, of a seeded sample of ``users`` of them
    (all of them when fewer); each is evaluable at valid too."""
    everyone = corpus.eval_users("test")
    if not np.array_equal(everyone, corpus.eval_users("valid")):
        raise ValueError("the valid and test stages have different evaluable users; a sample needs both")
    n = min(users, len(everyone))
    return np.sort(np.random.default_rng(seed).choice(len(everyone), size=n, replace=False))


def run_passes(
    engines: dict[str, dict[str, Any]], domain: str, settings: dict[str, Any], jobs: list[dict]
) -> list[dict]:
    """Every (stage, mode, reversed) pass, each mode with its engine (one engine where both modes name the
    same): per job, the orders and the cost (Ray task body)."""
    from actors.llm.factory import make_engine
    from actors.llm_rerank import LLMReranker

    built: list[tuple[dict, Any]] = []
    rerankers = {}
    for mode, kwargs in engines.items():
        engine = next((e for k, e in built if k == kwargs), None) or make_engine(EngineConfig(**kwargs))
        built.append((kwargs, engine))
        rerankers[mode] = LLMReranker(engine, domain, RerankSettings(**settings))
    out = []
    for job in jobs:
        t0 = time.perf_counter()
        cands = [c[::-1] for c in job["candidates"]] if job["reversed"] else job["candidates"]
        r = rerankers[job["mode"]].rerank(job["mode"], job["histories"], cands)
        out.append({"orders": r.orders, "named": r.named, "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens, "seconds": time.perf_counter() - t0,
                    "texts": r.texts[:3]})  # fmt: skip
    return out


def compute(paths: ArtifactPaths, corpus: Corpus, cf: str, k: int, users: int, seed: int, engine: EngineConfig,
            settings: RerankSettings, overrides: dict[str, Any] | None = None,
            pointwise_engine: EngineConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Rerank ``cf``'s top-``k`` for a sample of users (or reuse the files); returns the summary.
    ``pointwise_engine`` (default ``engine``) scores the pointwise pass."""
    import ray

    from actors.prompts import infer_domain
    from data_prep.llm_jobs import engine_for_replicas, engine_identity
    from data_prep.queries import CatalogView
    from tune.branches_store import branch_file, load_or_compute

    npz, summary_file = rerank_files(paths, cf)
    positions = sample_positions(corpus, users, seed)
    lists = {s: load_or_compute(paths, corpus, s, cf, cf_overrides=overrides).cf.ids[positions, :k]
             for s in ("valid", "test")}  # fmt: skip
    if any(v.shape[1] < k for v in lists.values()):
        raise ValueError(f"{cf}'s cached lists hold fewer than {k} items")
    pointwise_engine = pointwise_engine or engine
    spec = {"cf": cf, "k": k, "users": int(len(positions)), "seed": seed, "engine": engine_identity(engine),
            "pointwise_engine": engine_identity(pointwise_engine),
            "settings": asdict(settings), "lists": fingerprint(*(branch_file(paths, s, cf, corpus).name
                                                                for s in ("valid", "test")))}  # fmt: skip
    if npz.is_file() and summary_file.is_file() and read_json(summary_file).get("spec") == spec:
        return read_json(summary_file)
    import pandas as pd

    catalog = CatalogView(str(paths.root))
    everyone = corpus.eval_users("test")
    jobs, keys = [], []
    for stage, mode, rev in PASSES:
        hist = corpus.histories(stage, everyone[positions])
        jobs.append({"mode": mode, "reversed": rev, "histories": [catalog.history(h) for h in hist],
                     "candidates": [catalog.history(c) for c in lists[stage]]})  # fmt: skip
        keys.append(f"{stage}_{mode}{'_reversed' if rev else ''}")
    kwargs, gpus = engine_for_replicas(engine)
    engines = {"listwise": kwargs, "pointwise": engine_for_replicas(pointwise_engine)[0]}
    domain = infer_domain(pd.read_parquet(paths.items).columns)
    log.info("%s: reranking the top-%d of %d users per stage (%s)", cf, k, len(positions), ", ".join(keys))
    task = ray.remote(num_cpus=1, num_gpus=gpus, runtime_env={"env_vars": {"OMP_NUM_THREADS": "2"}})(
        run_passes
    )
    results = ray.get(task.remote(engines, domain, asdict(settings), jobs))
    arrays: dict[str, np.ndarray] = {"positions": positions}
    passes = {}
    for key, (stage, _, rev), res in zip(keys, PASSES, results, strict=True):
        order = np.asarray(res["orders"], dtype=np.int64)
        if rev:  # positions into the reversed list, back to positions into the list as CF ranked it
            order = k - 1 - order
        arrays[key] = np.take_along_axis(lists[stage], order, axis=1)
        arrays[f"{key}_order"] = order
        n = len(positions)
        passes[key] = {"seconds_per_user": round(res["seconds"] / n, 3),
                       "prompt_tokens_per_user": round(res["prompt_tokens"] / n, 1),
                       "completion_tokens_per_user": round(res["completion_tokens"] / n, 1),
                       "named_mean": round(float(np.mean(res["named"])), 2),
                       "named_all": round(float(np.mean(np.asarray(res["named"]) == k)), 3),
                       "example_answers": res["texts"]}  # fmt: skip
    bias = position_bias(
        arrays["test_listwise_order"].tolist(), arrays["test_listwise_reversed_order"].tolist()
    )
    summary = {"spec": spec, "passes": passes, "position_bias": bias}
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **arrays)
    write_json(summary_file, summary)
    return summary


def load(paths: ArtifactPaths, cf: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, summary) of ``cf``'s reranked lists, or None when the stage has not run for it."""
    npz, summary = rerank_files(paths, cf)
    if not (npz.is_file() and summary.is_file()):
        return None
    with np.load(npz) as z:
        return {k: np.asarray(z[k]) for k in z.files}, read_json(summary)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--cf", default="sasrec,ease", help="backbones whose lists are reranked, comma-separated")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="candidates per user: CF's top-K")
    ap.add_argument(
        "--users", type=int, default=200, help="seeded sample of evaluable users (the same at both stages)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history", type=int, default=10, help="most recent history items in the prompt")
    ap.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers", "openai"])
    ap.add_argument("--pointwise-engine", choices=["same", "auto", "vllm", "transformers"], default="same",
                    help="the engine of the pointwise pass (same model): transformers computes a user's history "
                    "once for all K candidates, vLLM's prompt log-probabilities recompute it per candidate "
                    "(measured here: 0.8 against 5 to 12 s per user)")  # fmt: skip
    ap.add_argument("--model", help="local HF folder or hub id (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="for --engine openai")
    add_set_argument(ap, "the config a CF model was trained with, as given to q2rec train")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    cfs = [c.strip() for c in args.cf.split(",") if c.strip()]
    try:
        if args.k < 2 or args.users < 1:
            raise ValueError(f"--k must be >= 2 and --users >= 1, got {args.k} and {args.users}")
        bad = [c for c in cfs if c not in ("sasrec", "ease", "als", "pop")]
        if bad:
            raise ValueError(f"--cf {bad}: choose from sasrec, ease, als, pop")
        engine = EngineConfig(backend=args.engine, model=args.model, base_url=args.base_url)
        pointwise = (
            None
            if args.pointwise_engine == "same"
            else EngineConfig(backend=args.pointwise_engine, model=args.model)
        )
        corpus = evaluation_corpus(paths)
        overrides = parse_overrides(args.overrides)
        for cf in cfs:
            s = compute(paths, corpus, cf, args.k, args.users, args.seed, engine, RerankSettings(history=args.history),
                        overrides.get(cf), pointwise)  # fmt: skip
            b = s["position_bias"]
            print(f"{cf}: top-{args.k} of {s['spec']['users']} users reranked; listwise named all {args.k} for "
                  f"{s['passes']['test_listwise']['named_all']:.0%} of users; position bias: Kendall tau "
                  f"{b['kendall_tau']:.3f} between given and reversed order, top-1 the same for "
                  f"{b['top1_same']:.0%}; seconds per user: " + ", ".join(
                      f"{k} {v['seconds_per_user']}" for k, v in s["passes"].items()))  # fmt: skip
    except (FileNotFoundError, ValueError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
