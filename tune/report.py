"""The comparison report: every method on validation and test, the fusion tuned on validation only.

    python -m tune.report --dataset ml-100k --out artifacts/ml-100k/report [--trials 200]

Writes ``report.json`` (``{"protocol", "results": {"<method>": {"valid", "test", ...}}, "comparisons",
"cost"}``), ``report.md`` and two PNG plots (metric bars per method; NDCG@10 by history-length bucket), and
prints the test table. The rows are ``tune.experiments``; each is evaluated by ``tune.rows`` and rendered
by ``tune.render``. Every fusion config is searched with Ray Tune on the validation branches
(``tune.search.cached_search``, reused while its inputs are unchanged) and then applied, unchanged, to
test. ``comparisons`` states measured differences with their paired bootstrap intervals; whether they meet
a target is a separate check (``python -m tune.targets``).
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

from actors.rerank import FusionConfig
from data_prep.artifacts import ArtifactPaths, read_json, write_json
from data_prep.corpus import Corpus
from data_prep.train import parse_overrides
from tune.evaluate import protocol
from tune.experiments import QUERY_ROWS, fused_methods
from tune.harness import metric_context
from tune.metrics import BOOTSTRAP_RESAMPLES, DEFAULT_KS, paired_bootstrap
from tune.render import markdown, plot, stage_table
from tune.rows import Overrides, branch_pair, cf_rows, fused_metrics, lastitem_row, list_metrics, row_result

log = logging.getLogger(__name__)

# (row, baseline) pairs compared on test NDCG@10, with the other metrics side by side
COMPARISONS = (
    ("fused_adaptive_ease", "ease"),
    ("fused_adaptive", "sasrec"),
    ("fused_adaptive_ease_noenrich_noquery", "ease"),
    ("fused_adaptive_ease", "fused_adaptive_ease_noenrich_noquery"),
    ("retrieval_query", "retrieval_lastitem"),
)
SIDE_BY_SIDE = ("NDCG@10", "Recall@10", "Coverage@10", "TailRecall@10", "Novelty@10")


def paired(ranks: dict[str, np.ndarray], a: str, b: str, base: float) -> dict[str, Any]:
    """Test NDCG@10 of ``a`` minus ``b`` on the same users: the difference, its 95% paired bootstrap
    interval, and both as a relative gain over ``b`` (whose NDCG@10 is ``base``)."""
    if ranks.get(a) is None or ranks.get(b) is None:
        return {}
    pb = paired_bootstrap(ranks[a], ranks[b])
    lo, hi = pb["ci95_low"], pb["ci95_high"]
    return {
        "ndcg10_diff": round(pb["diff"], 4),
        "ndcg10_diff_ci95": [round(lo, 4), round(hi, 4)],
        "gain_ci95": [round(lo / base, 4), round(hi / base, 4)] if base > 0 else None,
        "separable": bool(lo > 0 or hi < 0),  # False: within this test set's noise
    }


def comparisons(results: dict[str, Any], ranks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Measured test differences of each (row, baseline) pair present: the metrics side by side, the
    relative NDCG@10 gain, and (with per-user ranks) the paired bootstrap interval of the difference."""
    ranks = ranks or {}
    out: dict[str, Any] = {}
    for a, b in COMPARISONS:
        if not {a, b} <= results.keys():
            continue
        ta, tb = results[a]["test"], results[b]["test"]
        base = tb["NDCG@10"]
        out[f"{a}_vs_{b}"] = {
            "test": {
                k: {a: round(ta[k], 4), b: round(tb[k], 4)} for k in SIDE_BY_SIDE if k in ta and k in tb
            },
            "ndcg10_gain": round(ta["NDCG@10"] / base - 1, 4) if base > 0 else None,
            **paired(ranks, a, b, base),
        }
    return out


def cost(paths: ArtifactPaths, searches: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """LLM tokens per item and per user, and wall time per stage, from the stages' own summaries."""
    out: dict[str, Any] = {"report_stage_seconds": seconds}
    if (f := paths.enrich_summary).is_file():
        e = read_json(f)
        out["enrichment"] = {
            "items": e["items"], "completion_tokens_per_item": round(e["completion_tokens"] / e["items"], 1),
            "prompt_tokens_per_item": round(e["prompt_tokens"] / e["items"], 1),
            "seconds_last_run": e["seconds_this_run"], "items_last_run": e["enriched_this_run"],
            "steady_items_per_s": e.get("steady_items_per_s"), "engine": e.get("engine"),
        }  # fmt: skip
    if (f := paths.queries_summary).is_file():
        q = read_json(f)
        out["user_queries"] = {
            "queries": q["queries"], "completion_tokens_per_query": q["completion_tokens_per_user_query"],
            "completion_tokens_per_user": round(q["completion_tokens"] / max(1, q["queries"] / 2), 1),
            "seconds_last_run": q["seconds_this_run"], "queries_last_run": q["written_this_run"],
            "llm": q["llm"], "fallback": q["fallback"], "retried": q["retried"],
        }  # fmt: skip
    for variant in ("enriched", "metadata"):
        if (f := paths.index_dir(variant) / "index.json").is_file():
            i = read_json(f)
            out[f"index_{variant}"] = {"embed_s": i.get("embed_s"), "build_s": i.get("build_s")}
    out["tune_searches"] = {
        name: {"trials": s["trials"], "seconds": s["seconds"]} for name, s in searches.items()
    }
    return out


def build_report(
    paths: ArtifactPaths,
    trials: int = 200,
    variant: str = "enriched",
    query_mode: str = "llm+lastitem",
    overrides: Overrides | None = None,
) -> dict[str, Any]:
    """Evaluate every method; returns the report dict (see the module docstring).

    ``overrides`` (``{"sasrec": {"epochs": 2}}``) names the CF configs to load, as ``data_prep.train --set``
    trained them.
    """
    overrides = overrides or {}
    from data_prep.ray_cluster import init_ray
    from tune.search import cached_search

    init_ray(quiet=True)
    corpus = Corpus.load(paths)
    meta_vectors = np.load(paths.item_vectors("metadata"))
    ctx = metric_context(corpus, meta_vectors)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    results = cf_rows(paths, corpus, ctx, overrides)
    seconds["cf_load_and_evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results["retrieval_lastitem"] = lastitem_row(corpus, ctx, np.load(paths.item_vectors(variant)))
    for mode, name in QUERY_ROWS.items():
        valid, test = branch_pair(paths, corpus, "sasrec", mode, variant, overrides)
        results[name] = row_result(list_metrics(valid.retrieval.ids, valid, ctx),
                                   list_metrics(test.retrieval.ids, test, ctx))  # fmt: skip
    seconds["retrieval_branches"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    searches = {}
    for m in fused_methods(query_mode, variant):
        search = cached_search(paths, corpus, m.cf, m.retrieval, m.variant, trials, methods=m.methods,
                               cf_overrides=overrides.get(m.cf))  # fmt: skip
        searches[m.name] = search
        cfg = FusionConfig(**search["config"])
        valid, test = branch_pair(paths, corpus, m.cf, m.retrieval, m.variant, overrides)
        results[m.name] = row_result(fused_metrics(valid, cfg, ctx), fused_metrics(test, cfg, ctx),
                                     fusion={"cf": m.cf, "retrieval": m.retrieval, "variant": m.variant,
                                             "config": asdict(cfg), "rows": test.cf.mode})  # fmt: skip
        log.info("%s: test NDCG@10 %.4f", m.name, results[m.name]["test"]["NDCG@10"])
    seconds["fusion_search_and_evaluate"] = time.perf_counter() - t0

    proto = protocol(paths, corpus, DEFAULT_KS) | {
        "fused_and_query_rows": "ranked lists of the fused top-20 (from each branch's top-200); a target "
        "outside the list is a miss, so MRR there is MRR@20 (MRR@200 for retrieval_query*)",
        "ild_embeddings": "metadata-text vectors (all-MiniLM-L6-v2), the same for every method",
        "tuning": f"every fusion config searched on validation ({trials} Ray Tune trials, OptunaSearch, "
        "objective NDCG@10) and applied unchanged to test",
        "item_text": variant,
        "query_mode": query_mode,
    }
    ranks = {name: row.pop("test_ranks", None) for name, row in results.items()}
    proto["comparisons_noise"] = ("each comparison's NDCG@10 difference comes with a 95% paired bootstrap "
                                  f"interval over the test users ({BOOTSTRAP_RESAMPLES:,} resamples); "
                                  "'separable: false' means it contains 0")  # fmt: skip
    return {
        "protocol": proto,
        "results": results,
        "comparisons": comparisons(results, ranks),
        "cost": cost(paths, searches, {k: round(v, 1) for k, v in seconds.items()}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tune.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--out", type=Path, help="output folder (default: artifacts/<dataset>/report)")
    ap.add_argument("--trials", type=int, default=200, help="Ray Tune trials per fusion search")
    ap.add_argument("--variant", default="enriched", choices=["enriched", "metadata"], help="item text index")
    ap.add_argument("--query-mode", default="llm+lastitem", choices=list(QUERY_ROWS),
                    help="retrieval query of the fused rows (the same default as tune.search, so the "
                    "fused_adaptive row reuses the search behind fusion.json)")  # fmt: skip
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                    help="the config a CF model was trained with, as given to data_prep.train (repeatable)")  # fmt: skip
    ap.add_argument("--artifacts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    out = args.out or paths.report
    if not paths.is_prepared():
        print(
            f"error: {paths.root} is not prepared; run `python -m data_prep.prepare` first", file=sys.stderr
        )
        return 2
    try:
        report = build_report(
            paths, args.trials, args.variant, args.query_mode, parse_overrides(args.overrides)
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    plots = plot(report, out)
    (out / "report.md").write_text(markdown(report, plots))
    p = report["protocol"]
    print(f"\n{p['dataset']} test ({p['test_users']} users; {p['split']}; {p['ranking']}):\n")
    print(stage_table(report))
    for name, c in report["comparisons"].items():
        line = (
            f"  {name}: NDCG@10 gain {c['ndcg10_gain']:+.1%}"
            if c["ndcg10_gain"] is not None
            else f"  {name}:"
        )
        if "ndcg10_diff_ci95" in c:
            lo, hi = c["ndcg10_diff_ci95"]
            line += (f", difference {c['ndcg10_diff']:+.4f}, 95% paired bootstrap [{lo:+.4f}, {hi:+.4f}]: "
                     f"{'beyond' if c['separable'] else 'within'} noise")  # fmt: skip
        print(line)
    print(f"\nwrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
