"""The comparison report: every method on validation and test, the fusion tuned on validation only.

    q2rec report --dataset ml-100k --out artifacts/ml-100k/report [--trials 200] [--no-llm]

Writes ``report.json`` (``{"protocol", "results": {"<method>": {"valid", "test", "by_history_length",
"by_target_popularity", ...}}, "comparisons", "cold_items", "llm_rerank", "cost"}``),
``report.md`` and three PNG plots (metric bars per method; NDCG@10 by history-length bucket; Recall@10 by
the target's popularity group), and prints the test table, led by the fused and serial rows, and the
popularity-group table. The rows are ``tune.experiments``; each is evaluated by ``tune.rows`` and rendered by ``tune.render``. Every fused row's fusion and retrieval weights
are searched with Ray Tune on the validation branches (``tune.search.cached_search``, reused while its
inputs are unchanged); its final config is chosen by the one-standard-error rule (``tune.selection``) and
applied, unchanged, to test, and the best-on-validation config's test numbers are reported beside it. Each
row that uses the LLM carries ``vs_nollm``: its test NDCG@10 minus its backbone's ``fused_B_nollm`` row,
with the 95% paired bootstrap interval. ``comparisons`` states measured differences the same way; whether
they meet a target is a separate check (``q2rec targets``). ``--no-llm`` (or a dataset without
enrichment and queries) runs every row that needs no LLM artifact.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from actors.cf.overrides import add_set_argument, parse_overrides
from actors.fusion_file import TunedFusion
from actors.llm_rerank import MODES
from actors.retrieval_query import RetrievalWeights
from data_prep.artifacts import ArtifactPaths, read_json, write_json
from tune import llm_rerank
from tune.evaluate import protocol
from tune.experiments import BACKBONES, CF_MODELS, DEFAULT_MODELS, METHODS, backbones, fused_rows, serial_rows
from tune.harness import evaluation_corpus, metric_context
from tune.metrics import BOOTSTRAP_RESAMPLES, DEFAULT_KS, ndcg_gains, paired_bootstrap
from tune.render import group_table, llm_rerank_lines, markdown, plot, stage_table
from tune.rows import (
    Overrides,
    branch_pair,
    cf_rows,
    fused_metrics,
    lastitem_row,
    list_metrics,
    lists_metrics,
    row_result,
)
from tune.search import cached_search, choose, run_searches, simpler_sets
from tune.selection import candidates, select, use_name

log = logging.getLogger(__name__)

# (row, baseline) pairs compared on test NDCG@10, with the other metrics side by side
COMPARISONS = (
    ("fused_ease_llm", "ease"),
    ("fused_sasrec_llm", "sasrec"),
    ("fused_ease_nollm", "ease"),
    ("fused_sasrec_nollm", "sasrec"),
    ("fused_als_llm", "als"),
    ("fused_als_nollm", "als"),
    ("retrieval_query", "retrieval_lastitem"),
)
SIDE_BY_SIDE = (
    "NDCG@10",
    "Recall@10",
    "Coverage@10",
    "TailRecall@10",
    "Novelty@10",
    "ARP@10",
    "TailShare@10",
)


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


def comparison_pairs(results: dict[str, Any]) -> list[tuple[str, str]]:
    """``COMPARISONS``, then each serial row's parallel counterpart against it."""
    serial = [
        (r["fusion"]["parallel"], name) for name, r in results.items() if "parallel" in r.get("fusion", {})
    ]
    return [*COMPARISONS, *serial]


def comparisons(results: dict[str, Any], ranks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Measured test differences of each (row, baseline) pair present (``comparison_pairs``): the metrics side
    by side, the relative NDCG@10 gain, and (with per-user ranks) the paired bootstrap interval of the
    difference."""
    ranks = ranks or {}
    out: dict[str, Any] = {}
    for a, b in comparison_pairs(results):
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


def interval(pb: dict[str, float], key: str) -> dict[str, Any]:
    """A paired bootstrap's difference (named ``key``), its 95% interval and whether it excludes 0."""
    lo, hi = pb["ci95_low"], pb["ci95_high"]
    return {
        key: round(pb["diff"], 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "separable": bool(lo > 0 or hi < 0),
    }


def cold_items(results: dict[str, Any], ranks: dict[str, np.ndarray], cold: np.ndarray) -> dict[str, Any]:
    """Each fused and serial row against its CF backbone on the test users whose target is cold (no training
    interaction) and on the others: Recall@10 of both and the difference's 95% paired bootstrap interval."""
    out: dict[str, Any] = {
        "cold_target_users": int(cold.sum()),
        "warm_target_users": int((~cold).sum()),
        "rows": {},
    }
    for name, row in results.items():
        cf = row.get("fusion", {}).get("cf")
        if cf is None or ranks.get(name) is None or ranks.get(cf) is None:
            continue
        sides = {}
        for part, sel in (("cold", cold), ("warm", ~cold)):
            if not sel.any():
                continue
            a, b = ranks[name][sel], ranks[cf][sel]
            recall = {name: round(float((a <= 10).mean()), 4), cf: round(float((b <= 10).mean()), 4)}
            sides[part] = {"Recall@10": recall} | interval(
                paired_bootstrap(a, b, metric="Recall"), "recall10_diff"
            )
        out["rows"][f"{name}_vs_{cf}"] = sides
    return out


def llm_rerank_row(results: dict[str, Any], cf: str, arrays: dict[str, np.ndarray], summary: dict[str, Any],
                   valid, test, ctx) -> dict[str, Any]:  # fmt: skip
    """Add ``serial_<cf>_llm`` to ``results``: the LLM reranker's mode that is better on valid NDCG@10, its
    valid and test metrics on the reranked sample. Returns what the sample comparison needs."""
    pos = arrays["positions"]

    def metrics(b, key: str) -> dict[str, Any]:
        return lists_metrics(arrays[key], b.targets[pos], b.history_len[pos], ctx)

    valid_ndcg = {m: metrics(valid, f"valid_{m}")["NDCG@10"] for m in MODES}
    mode = max(MODES, key=lambda m: (valid_ndcg[m], m == "listwise"))
    name = f"serial_{cf}_llm"
    results[name] = row_result(metrics(valid, f"valid_{mode}"), metrics(test, f"test_{mode}"),
                               llm_rerank={"mode": mode, "valid_ndcg10_by_mode": valid_ndcg,
                                           "users": int(len(pos)), "k": summary["spec"]["k"],
                                           "engine": summary["spec"]["engine"], "passes": summary["passes"],
                                           "position_bias": summary["position_bias"]})  # fmt: skip
    return {"name": name, "positions": pos}


def sample_comparisons(
    results: dict[str, Any], ranks: dict[str, np.ndarray], cf: str, info: dict[str, Any]
) -> dict[str, Any]:
    """Every row that bears on the serial LLM reranker, on its sample of test users: NDCG@10 and Recall@10,
    and the paired differences of the fused row and of CF alone against it."""
    pos, name = info["positions"], info["name"]
    fused = [n for n in results if n.startswith(f"fused_{cf}_")]
    rows = [cf, *sorted(n for n in results if n.startswith(f"serial_{cf}_retrieval")), *fused[-1:], name]
    sample = {n: ranks[n][pos] if n != name else ranks[n] for n in rows if ranks.get(n) is not None}
    out: dict[str, Any] = {"users": int(len(pos)), "rows": {
        n: {"NDCG@10": round(float(ndcg_gains(r, 10).mean()), 4), "Recall@10": round(float((r <= 10).mean()), 4)}
        for n, r in sample.items()}}  # fmt: skip
    for a in [n for n in sample if n != name]:
        out[f"{a}_vs_{name}"] = interval(paired_bootstrap(sample[a], sample[name]), "ndcg10_diff")
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


def warm_searches(paths: ArtifactPaths, corpus, available: tuple[str, ...], models: tuple[str, ...],
                  overrides: Overrides, kwargs: dict[str, Any]) -> None:  # fmt: skip
    """Run every search the fused and serial rows will read (``tune.search.run_searches``: as many at once
    as the cluster has CPUs), so the rows below find them cached."""
    tunable = {cf: branch_pair(paths, corpus, cf, overrides)[0].tunable for cf in backbones(models)}
    jobs = [
        (row.cf, t, kwargs | {"cf_overrides": overrides.get(row.cf)})
        for row in fused_rows(available, models)
        for t in simpler_sets(row.use.tuned if tunable[row.cf] else ())
    ]
    jobs += [(s.cf, s.use.tuned if tunable[s.cf] else (),
              kwargs | {"cf_overrides": overrides.get(s.cf), "fixed": {"cf_candidates": s.k}})
             for s in serial_rows(available, models)]  # fmt: skip
    run_searches(paths, corpus, jobs)  # a search asked for by several rows runs once


def build_report(
    paths: ArtifactPaths,
    trials: int = 200,
    overrides: Overrides | None = None,
    no_llm: bool = False,
    models: tuple[str, ...] = DEFAULT_MODELS,
) -> dict[str, Any]:
    """Evaluate every method; returns the report dict (see the module docstring).

    Args:
        paths: the dataset's artifacts (prepared, indexed, the ``models`` trained).
        trials: Ray Tune trials per fusion search.
        overrides: the CF configs to load (``{"sasrec": {"epochs": 2}}``), as ``q2rec train --set`` trained
            them.
        no_llm: leave out every row that needs an LLM artifact.
        models: the CF models whose rows it has; the fused and serial rows are those of its backbones
            (``sasrec``, ``ease``, ``als``) among them.
    """
    overrides = overrides or {}
    from runtime.ray_cluster import init_ray
    from tune.search import available_weights

    init_ray(quiet=True)
    corpus = evaluation_corpus(paths)
    meta_vectors = np.load(paths.item_vectors("metadata"))
    ctx = metric_context(corpus, meta_vectors)
    available = () if no_llm else tuple(w for w in available_weights(paths) if w in ("llm", "enriched"))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    results = cf_rows(paths, corpus, ctx, overrides, models)
    seconds["cf_load_and_evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results["retrieval_lastitem"] = lastitem_row(corpus, ctx, meta_vectors)
    if "llm" in available and (query_cf := next(iter(backbones(models)), None)):
        valid, test = branch_pair(paths, corpus, query_cf, overrides, RetrievalWeights(last=0.0, llm=1.0))
        results["retrieval_query"] = row_result(list_metrics(valid.retrieval.ids, valid, ctx),
                                                list_metrics(test.retrieval.ids, test, ctx))  # fmt: skip
    seconds["retrieval_branches"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    searches, fused = {}, {}

    def tuned_row(name: str, cf: str, use: str, tuned: tuple[str, ...], choice: dict[str, Any], valid, test,
                  **extra: Any) -> None:  # fmt: skip
        """The row of a searched config: the selected config's valid and test metrics, the best-on-valid
        config's test metrics (its ranks in ``fused``)."""
        chosen, best = choice["selected"], choice["best"]
        selected = TunedFusion.of(chosen, f"{name}: selected")
        best_on_valid = TunedFusion.of(best, f"{name}: best")
        cfg, w = selected.config, selected.weights
        best_cfg, best_w = best_on_valid.config, best_on_valid.weights
        best_test = fused_metrics(test, best_cfg, ctx, best_w)
        fused[name] = best_test.pop("target_ranks")
        results[name] = row_result(
            fused_metrics(valid, cfg, ctx, w), fused_metrics(test, cfg, ctx, w),
            fusion={"cf": cf, "uses": use, "tuned_weights": list(tuned), "selected": chosen,
                    "best": best | {"test": {k: v for k, v in best_test.items() if not k.startswith("by_")}},
                    "selection": choice["table"],
                    "rows": "candidates" if test.candidates is not None else test.cf.mode, **extra},
        )  # fmt: skip
        log.info("%s: test NDCG@10 %.4f (selected %s; best on valid %s: %.4f)", name,
                 results[name]["test"]["NDCG@10"], chosen["name"], best["name"], best_test["NDCG@10"])  # fmt: skip

    kwargs = {"trials": trials, "methods": METHODS}
    t0 = time.perf_counter()
    warm_searches(paths, corpus, available, models, overrides, kwargs)
    seconds["searches"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in fused_rows(available, models):
        valid, test = branch_pair(paths, corpus, row.cf, overrides)
        tuned = row.use.tuned if valid.tunable else ()
        choice = choose(
            paths, corpus, row.cf, tuned, valid, ctx, kwargs | {"cf_overrides": overrides.get(row.cf)}
        )
        searches[row.name] = choice["searches"][use_name(tuned)]
        tuned_row(row.name, row.cf, row.use.name, tuned, choice, valid, test)
    seconds["fused_rows"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for srow in serial_rows(
        available, models
    ):  # one search each, the selection among its methods' best configs
        valid, test = branch_pair(paths, corpus, srow.cf, overrides)
        tuned = srow.use.tuned if valid.tunable else ()
        search = cached_search(paths, corpus, srow.cf, tuned, cf_overrides=overrides.get(srow.cf),
                               fixed={"cf_candidates": srow.k}, **kwargs)  # fmt: skip
        searches[srow.name] = search
        choice = select(candidates(use_name(tuned), search), valid, ctx)
        tuned_row(srow.name, srow.cf, srow.use.name, tuned, choice, valid, test, cf_candidates=srow.k,
                  parallel=srow.parallel)  # fmt: skip
    seconds["serial_rows"] = time.perf_counter() - t0
    reranked = {}
    for cf in () if no_llm else backbones(models):  # the LLM reranker's rows, where tune.llm_rerank ran
        loaded = llm_rerank.load(paths, cf)
        if loaded is not None:
            valid, test = branch_pair(paths, corpus, cf, overrides)
            reranked[cf] = llm_rerank_row(results, cf, *loaded, valid, test, ctx)

    proto = protocol(paths, corpus, DEFAULT_KS) | {
        "fused_and_query_rows": "ranked lists of the fused top-20 (from each branch's top-200); a target "
        "outside the list is a miss, so MRR there is MRR@20 (MRR@200 for retrieval_query)",
        "ild_embeddings": "metadata-text vectors (all-MiniLM-L6-v2), the same for every method",
        "tuning": f"every fused row's fusion and retrieval weights searched on validation ({trials} Ray Tune "
        "trials, OptunaSearch, objective NDCG@10, every weight's range from 0), the final config chosen by the "
        "one-standard-error rule over a paired bootstrap of validation users (tune.selection) and applied "
        "unchanged to test; 'fusion.best' is the best-on-validation config and its test numbers",
        "llm_inputs": list(available) or "none",
        "serial_rows": "serial_B_retrieval_kK: only the backbone's top-K can be answered, reordered by the same "
        "fusion of CF and retrieval scores (searched on validation like the fused rows, with the widest fused "
        "row's retrieval weights; one search, the selection among its methods); compared with that fused row",
    }
    ranks = {name: row.pop("test_ranks", None) for name, row in results.items()}
    for name, row in results.items():  # the fused LLM rows against their backbone's no-LLM row, on test
        uses = row.get("fusion", {}).get("uses")
        base = f"fused_{row['fusion']['cf']}_nollm" if uses else None
        if name.startswith("fused_") and uses and uses != "nollm" and base in results:
            d = paired_bootstrap(ranks[name], ranks[base])
            b = paired_bootstrap(fused[name], fused[base])
            row["vs_nollm"] = {"ndcg10_diff": round(d["diff"], 4),
                               "ci95": [round(d["ci95_low"], 4), round(d["ci95_high"], 4)],
                               "best_on_valid": {"ndcg10_diff": round(b["diff"], 4),
                                                 "ci95": [round(b["ci95_low"], 4), round(b["ci95_high"], 4)]}}  # fmt: skip
            row["llm_weights"] = {k: row["fusion"]["selected"]["weights"][k] for k in ("llm", "enriched")}
    proto["comparisons_noise"] = ("each comparison's NDCG@10 difference comes with a 95% paired bootstrap "
                                  f"interval over the test users ({BOOTSTRAP_RESAMPLES:,} resamples); "
                                  "'separable: false' means it contains 0")  # fmt: skip
    samples = {cf: sample_comparisons(results, ranks, cf, info) for cf, info in reranked.items()}
    fused_first = {n: results[n] for n in results if n.startswith(("fused_", "serial_"))}
    ordered = fused_first | {n: r for n, r in results.items() if n not in fused_first}
    targets = corpus.test_target[corpus.eval_users("test")]
    return {
        "protocol": proto,
        "results": ordered,
        "comparisons": comparisons(results, ranks),
        "cold_items": cold_items(results, ranks, ctx.item_popularity[targets] == 0),
        "llm_rerank": samples,
        "cost": cost(paths, searches, {k: round(v, 1) for k, v in seconds.items()}),
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--out", type=Path, help="output folder (default: artifacts/<dataset>/report)")
    ap.add_argument("--trials", type=int, default=200, help="Ray Tune trials per fusion search")
    ap.add_argument("--no-llm", action="store_true",
                    help="only the rows that need no LLM artifact (pop, EASE, SASRec, last-item retrieval, "
                    "fused_*_nollm); also what a dataset without enrichment and queries gets")  # fmt: skip
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="the CF models whose rows it has (trained by q2rec train), of " + ",".join(CF_MODELS)
                    + "; their backbones among " + ", ".join(BACKBONES) + " get the fused and serial rows")  # fmt: skip
    add_set_argument(ap, "the config a CF model was trained with, as given to q2rec train (repeatable)")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    out = args.out or paths.report
    if not paths.is_prepared():
        print(f"error: {paths.root} is not prepared; run `q2rec prepare` first", file=sys.stderr)
        return 2
    from tune.search import available_weights

    no_llm = args.no_llm or not ({"llm", "enriched"} & set(available_weights(paths)))
    if no_llm and not args.no_llm:
        print(f"note: {paths.root} has no LLM queries and no description vectors: the report runs the rows "
              "that need no LLM (as with --no-llm)")  # fmt: skip
    try:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        bad = [m for m in models if m not in CF_MODELS]
        if bad or not models:
            raise ValueError(f"--models {args.models!r}: choose from {', '.join(CF_MODELS)}")
        report = build_report(paths, args.trials, parse_overrides(args.overrides), no_llm, models)
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
    print(f"\nby the popularity group of the test target ({p['popularity_groups'].split(';')[0]}):\n")
    print(group_table(report))
    for name, row in report["results"].items():
        if "vs_nollm" in row:
            v = row["vs_nollm"]
            print(f"  {name} vs {row['fusion']['cf']} without the LLM: {v['ndcg10_diff']:+.4f}, 95% paired "
                  f"bootstrap [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]; LLM weights {row['llm_weights']} "
                  f"(best on valid: {v['best_on_valid']['ndcg10_diff']:+.4f})")  # fmt: skip
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
    for line in llm_rerank_lines(report):
        print(line)
    cold = report["cold_items"]
    if cold["cold_target_users"]:
        print(f"\ncold targets ({cold['cold_target_users']} test users; no training interaction), Recall@10 "
              "against the CF backbone, 95% paired bootstrap:")  # fmt: skip
        for name, sides in cold["rows"].items():
            if "cold" in sides:
                print("  " + name + ": " + "; ".join(
                    f"{part} {c['recall10_diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"
                    for part, c in sides.items()))  # fmt: skip
    print(f"\nwrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots")
    return 0
