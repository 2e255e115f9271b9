"""The comparison report: every method on validation and test, the fusion tuned on validation only.

    python -m tune.report --dataset ml-100k --out artifacts/ml-100k/report [--trials 200]

Writes ``report.json`` (``{"protocol": {...}, "results": {"<method>": {"valid": {...}, "test": {...}}}, ...}``),
``report.md`` and two PNG plots (metric bars per method; NDCG@10 by history-length bucket), and prints the
test table. Methods:

- ``pop``, ``ease``, ``sasrec``: CF alone, full ranking;
- ``retrieval_lastitem``: the last history item's text as the query, no LLM (full ranking, exact cosine);
- ``retrieval_query``: the LLM query alone, zero-shot; ``retrieval_query_lastitem``: the LLM query followed
  by the last item's metadata text (both over the branch's top-200, see the protocol);
- ``fused_fixed`` (best fixed α), ``fused_adaptive`` (tuned per-user α_u, SASRec backbone),
  ``fused_adaptive_ease`` (EASE backbone); ablations ``fused_adaptive_noenrich`` (metadata-only item
  text) and ``fused_adaptive_noquery`` / ``fused_adaptive_ease_noquery`` (last item's text instead of the
  LLM query), ``fused_adaptive_ease_noenrich_noquery`` (no LLM at all: EASE + the last item's metadata text).

Every fusion config is searched with Ray Tune on the validation branches (``tune.search.cached_search``,
reused while its inputs are unchanged) and then applied, unchanged, to test.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actors.rerank import FusionConfig, fuse
from data_prep.artifacts import ArtifactPaths, read_json, write_json
from data_prep.corpus import Corpus
from data_prep.index import index_dir
from tune.branches import BranchScores, ranked_lists
from tune.evaluate import markdown_table, parse_overrides, protocol
from tune.harness import evaluate_scorer, metric_context
from tune.metrics import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_KS,
    MetricContext,
    by_history_length,
    compute_metrics,
    paired_bootstrap,
)

log = logging.getLogger(__name__)

CF_MODELS = ("pop", "ease", "sasrec")
QUERY_ROWS = {"llm": "retrieval_query", "llm+lastitem": "retrieval_query_lastitem"}  # query mode -> row
Overrides = dict[str, dict[str, Any]]
TABLE_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR", "Coverage@10", "Novelty@10", "ILD@10",
                 "TailRecall@10")  # fmt: skip


@dataclass(frozen=True)
class FusedMethod:
    """One fused row of the report: the CF backbone, the retrieval query, the item text and the methods searched."""

    name: str
    cf: str
    retrieval: str  # llm | llm+lastitem | lastitem
    variant: str  # enriched | metadata
    methods: tuple[str, ...]


def fused_methods(query_mode: str, variant: str) -> list[FusedMethod]:
    return [
        FusedMethod("fused_fixed", "sasrec", query_mode, variant, ("fixed",)),
        FusedMethod("fused_adaptive", "sasrec", query_mode, variant, ("adaptive",)),
        FusedMethod("fused_adaptive_ease", "ease", query_mode, variant, ("adaptive",)),
        FusedMethod("fused_adaptive_noenrich", "sasrec", query_mode, "metadata", ("adaptive",)),
        FusedMethod("fused_adaptive_noquery", "sasrec", "lastitem", variant, ("adaptive",)),
        FusedMethod("fused_adaptive_ease_noquery", "ease", "lastitem", variant, ("adaptive",)),
        # no LLM at all: the setup of the independent calibration (EASE + metadata text of the last item)
        FusedMethod("fused_adaptive_ease_noenrich_noquery", "ease", "lastitem", "metadata", ("adaptive",)),
    ]


def _row(valid: dict[str, Any], test: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Split off ``by_history_length`` and the per-user ``target_ranks`` (both kept for test only) from two
    metric dicts. ``test_ranks`` is for paired comparisons and is taken out before the report is written."""
    split_off = ("by_history_length", "target_ranks")
    row = {
        "valid": {k: v for k, v in valid.items() if k not in split_off},
        "test": {k: v for k, v in test.items() if k not in split_off},
        "by_history_length": test.get("by_history_length", {}),
        "test_ranks": test.get("target_ranks"),
    }
    return row | extra


def _list_metrics(top: np.ndarray, b: BranchScores, ctx: MetricContext) -> dict[str, Any]:
    ranked = ranked_lists(top, b.targets, b.history_len, ctx.n_items)
    return compute_metrics(ranked, ctx, DEFAULT_KS) | {"by_history_length": by_history_length(ranked),
                                                       "target_ranks": ranked.ranks}  # fmt: skip


def fused_metrics(b: BranchScores, cfg: FusionConfig, ctx: MetricContext) -> dict[str, Any]:
    fused = fuse(b.cf_ids, b.cf_scores, b.ret_ids, b.ret_scores, b.history_len, cfg, max(DEFAULT_KS), b.cf_full,
                 b.ret_full)  # fmt: skip
    return _list_metrics(fused.ids, b, ctx) | {"mean_alpha": float(fused.alpha.mean())}


def cf_rows(paths: ArtifactPaths, corpus: Corpus, ctx: MetricContext, overrides: Overrides) -> dict[str, Any]:
    from tune.training import train_or_load

    rows = {}
    for name in CF_MODELS:
        model = train_or_load(paths, name, overrides.get(name))

        def scorer(users, histories, model=model):
            return model.score(histories)

        rows[name] = _row(
            *(evaluate_scorer(scorer, corpus, s, ctx, with_ranks=True) for s in ("valid", "test"))
        )
    return rows


def lastitem_row(corpus: Corpus, ctx: MetricContext, vectors: np.ndarray) -> dict[str, Any]:
    from tune.content import LastItemScorer

    scorer = LastItemScorer(vectors)
    return _row(*(evaluate_scorer(scorer, corpus, s, ctx, with_ranks=True) for s in ("valid", "test")))


def branch_pair(paths, corpus, cf: str, retrieval: str, variant: str, overrides: Overrides):
    """(valid, test) BranchScores of one combination."""
    from tune.branches_store import load_or_compute

    return tuple(load_or_compute(paths, corpus, s, cf, retrieval, variant, cf_overrides=overrides.get(cf))
                 for s in ("valid", "test"))  # fmt: skip


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
        "gain_ci95": [round(lo / base, 4), round(hi / base, 4)],
        "separable": bool(lo > 0 or hi < 0),  # False: within this test set's noise
    }


def bars(results: dict[str, Any], ranks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The issue's quality bars, measured: ratios and pass/fail, whichever way they go. With the per-user
    test ranks, each comparison also gets a paired bootstrap interval (is the difference beyond noise?)."""
    ranks = ranks or {}

    def t(m, k):
        return results[m]["test"][k]

    out: dict[str, Any] = {}
    if {"ease", "fused_adaptive_ease"} <= results.keys():
        gain = t("fused_adaptive_ease", "NDCG@10") / t("ease", "NDCG@10") - 1
        out["fused_adaptive_ease_vs_ease_test_ndcg10"] = {
            "gain": round(gain, 4), "goal": ">= +0.20", "met": gain >= 0.20,
            **paired(ranks, "fused_adaptive_ease", "ease", t("ease", "NDCG@10")),
        }  # fmt: skip
    if {"sasrec", "fused_adaptive"} <= results.keys():
        checks = {
            k: (t("fused_adaptive", k), t("sasrec", k)) for k in ("NDCG@10", "Coverage@10", "TailRecall@10")
        }
        met = checks["NDCG@10"][0] >= checks["NDCG@10"][1] and all(
            a > b for k, (a, b) in checks.items() if k != "NDCG@10"
        )
        out["fused_adaptive_vs_sasrec_test"] = {
            k: {"fused": round(a, 4), "sasrec": round(b, 4)} for k, (a, b) in checks.items()
        } | {"goal": "NDCG@10 not below; Coverage@10 and TailRecall@10 higher", "met": met,
             **paired(ranks, "fused_adaptive", "sasrec", t("sasrec", "NDCG@10"))}  # fmt: skip
    if {"retrieval_query", "retrieval_lastitem"} <= results.keys():
        q, last = (
            results["retrieval_query"]["valid"]["NDCG@10"],
            results["retrieval_lastitem"]["valid"]["NDCG@10"],
        )
        out["retrieval_query_vs_lastitem_valid_ndcg10"] = {"query": round(q, 4), "lastitem": round(last, 4),
                                                           "goal": "query > lastitem", "met": q > last}  # fmt: skip
    return out


def cost(paths: ArtifactPaths, searches: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """LLM tokens per item and per user, and wall time per stage, from the stages' own summaries."""
    out: dict[str, Any] = {"report_stage_seconds": seconds}
    if (f := paths.root / "enrich.json").is_file():
        e = read_json(f)
        out["enrichment"] = {
            "items": e["items"], "completion_tokens_per_item": round(e["completion_tokens"] / e["items"], 1),
            "prompt_tokens_per_item": round(e["prompt_tokens"] / e["items"], 1),
            "seconds_last_run": e["seconds_this_run"], "items_last_run": e["enriched_this_run"],
            "steady_items_per_s": e.get("steady_items_per_s"), "engine": e.get("engine"),
        }  # fmt: skip
    if (f := paths.root / "queries.json").is_file():
        q = read_json(f)
        out["user_queries"] = {
            "queries": q["queries"], "completion_tokens_per_query": q["completion_tokens_per_user_query"],
            "completion_tokens_per_user": round(q["completion_tokens"] / max(1, q["queries"] / 2), 1),
            "seconds_last_run": q["seconds_this_run"], "queries_last_run": q["written_this_run"],
            "llm": q["llm"], "fallback": q["fallback"], "retried": q["retried"],
        }  # fmt: skip
    for variant in ("enriched", "metadata"):
        if (f := paths.root / "index" / variant / "index.json").is_file():
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

    ``overrides`` (``{"sasrec": {"epochs": 2}}``) changes CF configs, as ``tune.evaluate --set`` does.
    """
    overrides = overrides or {}
    from data_prep.ray_cluster import init_ray
    from tune.search import cached_search

    init_ray(quiet=True)
    corpus = Corpus.load(paths)
    meta_vectors = np.load(index_dir(paths, "metadata") / "vectors.npy")
    ctx = metric_context(corpus, meta_vectors)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    results = cf_rows(paths, corpus, ctx, overrides)
    seconds["cf_train_or_load_and_evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results["retrieval_lastitem"] = lastitem_row(
        corpus, ctx, np.load(index_dir(paths, variant) / "vectors.npy")
    )
    for mode, name in QUERY_ROWS.items():
        valid, test = branch_pair(paths, corpus, "sasrec", mode, variant, overrides)
        results[name] = _row(_list_metrics(valid.ret_ids, valid, ctx), _list_metrics(test.ret_ids, test, ctx))
    seconds["retrieval_branches"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    searches = {}
    for m in fused_methods(query_mode, variant):
        search = cached_search(paths, corpus, m.cf, m.retrieval, m.variant, trials, methods=m.methods,
                               cf_overrides=overrides.get(m.cf))  # fmt: skip
        searches[m.name] = search
        cfg = FusionConfig(**search["config"])
        valid, test = branch_pair(paths, corpus, m.cf, m.retrieval, m.variant, overrides)
        results[m.name] = _row(fused_metrics(valid, cfg, ctx), fused_metrics(test, cfg, ctx),
                               fusion={"cf": m.cf, "retrieval": m.retrieval, "variant": m.variant,
                                       "config": asdict(cfg)})  # fmt: skip
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
    proto["bars_noise"] = ("each bar's NDCG@10 difference comes with a 95% paired bootstrap interval over the "
                           f"test users ({BOOTSTRAP_RESAMPLES:,} resamples); 'separable: false' means it contains 0")  # fmt: skip
    return {
        "protocol": proto,
        "results": results,
        "bars": bars(results, ranks),
        "cost": cost(paths, searches, {k: round(v, 1) for k, v in seconds.items()}),
    }


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = list(results)
    files = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for ax, metric in zip(axes.flat, ("NDCG@10", "Recall@10", "Coverage@10", "TailRecall@10"), strict=True):
        vals = [results[n]["test"].get(metric, np.nan) for n in names]
        colors = ["tab:gray" if n in CF_MODELS else "tab:green" if n.startswith("retrieval") else "tab:blue"
                  for n in names]  # fmt: skip
        ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{metric} (test)")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
    p = report["protocol"]
    fig.suptitle(
        f"{p['dataset']}: leave-one-out, full ranking over {p['items']} items, {p['test_users']} test users"
    )
    files.append(out / "metrics_test.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    for n in ("pop", "ease", "sasrec", "retrieval_lastitem", "retrieval_query", "fused_adaptive",
              "fused_adaptive_ease"):  # fmt: skip
        buckets = results.get(n, {}).get("by_history_length", {})
        if buckets:
            labels = list(buckets)
            ax.plot(labels, [buckets[b]["NDCG@10"] for b in labels], marker="o", label=n)
    if buckets:
        ax.set_xticks(range(len(labels)), [f"{b}\n({buckets[b]['users']} users)" for b in labels])
    ax.set_xlabel("input history length (items before the target)")
    ax.set_ylabel("NDCG@10 (test)")
    ax.legend()
    ax.grid(alpha=0.3)
    files.append(out / "by_history_length.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def markdown(report: dict[str, Any], plots: list[Path]) -> str:
    p = report["protocol"]
    lines = [
        f"# q2rec report: {p['dataset']}",
        "",
        f"{p['users']} users, {p['items']} items, {p['interactions']} interactions. Split: {p['split']}. "
        f"Ranking: {p['ranking']}. Fused and query rows: {p['fused_and_query_rows']}. Tuning: {p['tuning']}. "
        f"Item text: {p['item_text']}; LLM query mode in the fused rows: {p['query_mode']}.",
        "",
        markdown_table(report["results"], TABLE_METRICS),
        "",
        "## Quality bars",
        "",
    ]
    for name, bar in report["bars"].items():
        lines.append(f"- {name}: {'met' if bar['met'] else 'NOT met'} — "
                     f"{ {k: v for k, v in bar.items() if k != 'met'} }")  # fmt: skip
    lines += ["", "## Tuned fusion configs (validation)", ""]
    for name, row in report["results"].items():
        if "fusion" in row:
            f = row["fusion"]
            lines.append(
                f"- {name}: cf={f['cf']}, retrieval={f['retrieval']}, text={f['variant']}, {f['config']}"
            )
    lines += ["", "## Cost", "", "```", _json(report["cost"]), "```", ""]
    lines += [f"![{f.stem}]({f.name})" for f in plots]
    return "\n".join(lines) + "\n"


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)


def stage_table(report: dict[str, Any]) -> str:
    test_only = {n: {"test": r["test"]} for n, r in report["results"].items()}
    return markdown_table(test_only, TABLE_METRICS)


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
                    help="override a CF model config field, as in tune.evaluate (repeatable)")  # fmt: skip
    ap.add_argument("--artifacts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    out = args.out or paths.root / "report"
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
    for name, bar in report["bars"].items():
        noise = ""
        if "ndcg10_diff_ci95" in bar:
            lo, hi = bar["ndcg10_diff_ci95"]
            noise = (f" (NDCG@10 difference {bar['ndcg10_diff']:+.4f}, 95% paired bootstrap [{lo:+.4f}, {hi:+.4f}]"
                     f": {'beyond' if bar['separable'] else 'within'} noise)")  # fmt: skip
        print(f"  {name}: {'met' if bar['met'] else 'NOT met'}{noise}")
    print(f"\nwrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
