"""Rendering of a report: the markdown file, the plots, and the test table printed at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tune.evaluate import markdown_table
from tune.experiments import BACKBONES, CF_MODELS
from tune.metrics import GROUPS

TABLE_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR", "Coverage@10", "Novelty@10", "ILD@10",
                 "TailRecall@10", "ARP@10", "TailShare@10")  # fmt: skip
TARGET_GROUPS = (*GROUPS, "cold")


def popularity_rows(results: dict[str, Any]) -> list[str]:
    """The rows the popularity plot compares, per backbone: CF alone, its serial rows, its fused rows (without
    and with the LLM), then last-item retrieval."""
    names = []
    for cf in BACKBONES:
        names += [cf] + sorted(n for n in results if n.startswith(f"serial_{cf}_"))
        names += [n for n in (f"fused_{cf}_nollm", f"fused_{cf}_llm") if n in results]
    return [n for n in [*names, "retrieval_lastitem"] if n in results]


def group_table(report: dict[str, Any]) -> str:
    """Markdown: each row's test Recall@10 and NDCG@10 by the target's popularity group (user counts in the
    header), with ARP@10 and TailShare@10."""
    results = report["results"]
    counts = next((r["by_target_popularity"] for r in results.values() if r.get("by_target_popularity")), {})
    groups = [g for g in TARGET_GROUPS if g in counts]
    head = " | ".join(f"{g} ({counts[g]['users']}) R@10 / N@10" for g in groups)
    lines = [f"| row | {head} | ARP@10 | TailShare@10 |", "|---|" + "---:|" * (len(groups) + 2)]
    for name, row in results.items():
        by = row.get("by_target_popularity", {})
        cells = [f"{by[g]['Recall@10']:.4f} / {by[g]['NDCG@10']:.4f}" if g in by else "" for g in groups]
        t = row["test"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {t.get('ARP@10', np.nan):.1f} | "
                     f"{t.get('TailShare@10', np.nan):.3f} |")  # fmt: skip
    return "\n".join(lines)


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
    for n in ("pop", "ease", "sasrec", "als", "retrieval_lastitem", "retrieval_query", "fused_sasrec_nollm",
              "fused_sasrec_llm", "fused_ease_nollm", "fused_ease_llm", "fused_als_nollm", "fused_als_llm"):  # fmt: skip
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

    names = [n for n in popularity_rows(results) if results[n].get("by_target_popularity")]
    if names:
        groups = [g for g in TARGET_GROUPS if g in results[names[0]]["by_target_popularity"]]
        fig, ax = plt.subplots(
            figsize=(min(14, max(9, 0.3 * len(names) * len(groups))), 5), constrained_layout=True
        )
        width = 0.8 / len(names)
        cmap = plt.get_cmap("tab20")
        for i, n in enumerate(names):
            by = results[n]["by_target_popularity"]
            vals = [by.get(g, {}).get("Recall@10", np.nan) for g in groups]
            sample = results[n].get("llm_rerank", {}).get("users")
            label = f"{n} ({sample}-user sample)" if sample else n
            ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, vals, width, label=label,
                   color=cmap(i % 20))  # fmt: skip
        counts = results[names[0]]["by_target_popularity"]
        ax.set_xticks(range(len(groups)), [f"{g}\n({counts[g]['users']} users)" for g in groups])
        ax.set_xlabel("popularity group of the test target (training interactions: head = first 20%, tail = last "
                      "20%; cold = never seen in training)")  # fmt: skip
        ax.set_ylabel("Recall@10 (test)")
        ax.set_title(f"{p['dataset']}: CF alone, serial (CF's top-K reordered) and parallel (fused) rows")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3, axis="y")
        files.append(out / "by_popularity.png")
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
    lines += [
        "",
        "## By the popularity of the test target",
        "",
        p.get("popularity_groups", ""),
        "",
        group_table(report),
        "",
    ]
    cold = report.get("cold_items", {})
    if cold.get("cold_target_users"):
        lines += ["## Cold targets (test users whose target no training user has seen)", "",
                  f"{cold['cold_target_users']} cold-target and {cold['warm_target_users']} warm-target users; "
                  "each fused and serial row against its CF backbone, Recall@10 difference with its 95% paired "
                  "bootstrap interval:", ""]  # fmt: skip
        for name, sides in cold["rows"].items():
            if sides:
                lines.append(f"- {name}: " + "; ".join(
                    f"{part} {c['Recall@10']} diff {c['recall10_diff']:+.4f} {c['ci95']}" for part, c in sides.items()))  # fmt: skip
    if report.get("llm_rerank"):
        lines += ["", "## The serial LLM reranker (on a seeded sample of test users)", "```",
                  *[x.strip("\n") for x in llm_rerank_lines(report)], "```"]  # fmt: skip
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
    lines += ["", "## Cost", "", "```", _json(report["cost"]), "```", ""]
    lines += [f"![{f.stem}]({f.name})" for f in plots]
    return "\n".join(lines) + "\n"


def llm_rerank_lines(report: dict[str, Any]) -> list[str]:
    """The serial LLM reranker on its sample: each row's test NDCG@10 there, the paired differences, the
    position bias and the cost per user."""
    lines = []
    for cf, c in report.get("llm_rerank", {}).items():
        row = report["results"][f"serial_{cf}_llm"]["llm_rerank"]
        b = row["position_bias"]
        cost = "; ".join(f"{k} {v['seconds_per_user']} s, {v['prompt_tokens_per_user']:.0f} + "
                         f"{v['completion_tokens_per_user']:.0f} tokens" for k, v in row["passes"].items())  # fmt: skip
        lines += [f"\nserial_{cf}_llm: {cf}'s top-{row['k']} reranked by the LLM ({row['mode']}, the better mode on "
                  f"valid: {row['valid_ndcg10_by_mode']}), on a seeded sample of {c['users']} test users:",
                  "  test NDCG@10 on the sample: " + ", ".join(f"{n} {v['NDCG@10']:.4f}" for n, v in c["rows"].items())]  # fmt: skip
        lines += [f"  {k}: {v['ndcg10_diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
                  for k, v in c.items() if k.endswith(f"_vs_serial_{cf}_llm")]  # fmt: skip
        lines += [f"  position bias (listwise, the same {row['k']} candidates given as ranked and reversed): Kendall "
                  f"tau {b['kendall_tau']:.3f}, top-1 the same for {b['top1_same']:.0%} of users",
                  f"  per user: {cost}"]  # fmt: skip
    return lines


def _json(obj: Any) -> str:

    return json.dumps(obj, indent=2)


def stage_table(report: dict[str, Any]) -> str:
    test_only = {n: {"test": r["test"]} for n, r in report["results"].items()}
    return markdown_table(test_only, TABLE_METRICS)
