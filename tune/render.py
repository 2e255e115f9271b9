"""Rendering of a report: the markdown file, the plots, and the test table printed at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tune.evaluate import markdown_table
from tune.experiments import CF_MODELS

TABLE_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR", "Coverage@10", "Novelty@10", "ILD@10",
                 "TailRecall@10")  # fmt: skip


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
    for n in ("pop", "ease", "sasrec", "retrieval_lastitem", "retrieval_query", "fused_sasrec_nollm",
              "fused_sasrec_llm", "fused_ease_nollm", "fused_ease_llm"):  # fmt: skip
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
        f"LLM inputs: {p['llm_inputs']}.",
        "",
        markdown_table(report["results"], TABLE_METRICS),
        "",
        "## Comparisons (test; NDCG@10 difference with its 95% paired bootstrap interval)",
        "",
    ]
    for name, c in report["comparisons"].items():
        noise = ""
        if "ndcg10_diff_ci95" in c:
            lo, hi = c["ndcg10_diff_ci95"]
            noise = (f", difference {c['ndcg10_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], "
                     f"{'beyond' if c['separable'] else 'within'} noise")  # fmt: skip
        gain = f"{c['ndcg10_gain']:+.1%}" if c["ndcg10_gain"] is not None else "n/a"
        lines.append(f"- {name}: NDCG@10 gain {gain}{noise}; {c['test']}")
    lines += ["", "## Does the LLM help? (test NDCG@10 minus the backbone's no-LLM row, 95% interval)", ""]
    for name, row in report["results"].items():
        if "vs_nollm" in row:
            v, b = row["vs_nollm"], row["vs_nollm"]["best_on_valid"]
            lines.append(f"- {name}: selected {v['ndcg10_diff']:+.4f} {v['ci95']}, best on valid "
                         f"{b['ndcg10_diff']:+.4f} {b['ci95']}; LLM weights {row['llm_weights']}")  # fmt: skip
    lines += ["", "## Fusion configs (searched on validation; selected by the one-standard-error rule)", ""]
    for name, row in report["results"].items():
        if "fusion" in row:
            f = row["fusion"]
            sel, best = f["selected"], f["best"]
            lines.append(f"- {name}: cf={f['cf']}, weights searched {f['tuned_weights']}, rows={f.get('rows', 'full')}; "
                         f"selected {sel['name']} (valid NDCG@10 {sel['valid_ndcg10']:.4f}) {sel['config']} "
                         f"{sel['weights']}; best on valid {best['name']} ({best['valid_ndcg10']:.4f}, test "
                         f"{best['test']['NDCG@10']:.4f})")  # fmt: skip
    if report.get("aliases"):
        lines += ["", f"Earlier row names, kept for one release: {report['aliases']}"]
    lines += ["", "## Cost", "", "```", _json(report["cost"]), "```", ""]
    lines += [f"![{f.stem}]({f.name})" for f in plots]
    return "\n".join(lines) + "\n"


def _json(obj: Any) -> str:

    return json.dumps(obj, indent=2)


def stage_table(report: dict[str, Any]) -> str:
    test_only = {n: {"test": r["test"]} for n, r in report["results"].items()}
    return markdown_table(test_only, TABLE_METRICS)
