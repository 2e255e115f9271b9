"""Compare a written report with the project's quality targets (the report itself states numbers only).

    q2rec targets [artifacts/ml-100k/report/report.json]

Each target reads the report's measured ``comparisons`` and says met or not, whichever way it goes; the
exit code is 0 either way (a target is information, not a gate), 2 for a missing or malformed report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    comparison: str  # a key of the report's ``comparisons``
    goal: str
    met: Callable[[dict[str, Any]], bool]


def _side(c: dict[str, Any], metric: str) -> tuple[float, float]:
    a, b = c["test"][metric].values()
    return a, b


def _no_llm_row_below_nollm(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per LLM row of the report: its vs_nollm interval must not lie entirely below 0."""
    out = []
    for name, row in report.get("results", {}).items():
        v = row.get("vs_nollm")
        if v is None:
            continue
        out.append({"target": f"{name} not below {name.rsplit('_', 1)[0]}_nollm beyond noise",
                    "goal": "95% interval of the difference not entirely below 0", "met": v["ci95"][1] >= 0,
                    "gain": None, "ci95": v["ci95"], "separable": v["ci95"][0] > 0 or v["ci95"][1] < 0})  # fmt: skip
    return out


TARGETS = (
    Target("fusion on EASE gains at least 30% test NDCG@10", "fused_ease_llm_vs_ease", ">= +30%",
           lambda c: c["ndcg10_gain"] >= 0.30),
    Target("fusion on SASRec: NDCG@10 not below, coverage and tail recall higher", "fused_sasrec_llm_vs_sasrec",
           "NDCG@10 >=, Coverage@10 >, TailRecall@10 >",
           lambda c: _side(c, "NDCG@10")[0] >= _side(c, "NDCG@10")[1]
           and all(_side(c, m)[0] > _side(c, m)[1] for m in ("Coverage@10", "TailRecall@10"))),
    *(Target(f"parallel fusion on {cf} not below the serial one (CF's top-{k} reordered)",
             f"fused_{cf}_llm_vs_serial_{cf}_retrieval_k{k}", "NDCG@10 >=, ARP@10 <",
             lambda c: _side(c, "NDCG@10")[0] >= _side(c, "NDCG@10")[1] and _side(c, "ARP@10")[0] < _side(c, "ARP@10")[1])
      for cf in ("ease", "sasrec") for k in (20, 50)),
)  # fmt: skip


def check(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target whose comparison the report has: measured values, goal, met."""
    out = []
    for t in TARGETS:
        c = report.get("comparisons", {}).get(t.comparison)
        if c is None:
            continue
        out.append({"target": t.name, "goal": t.goal, "met": bool(t.met(c)), "gain": c.get("ndcg10_gain"),
                    "ci95": c.get("ndcg10_diff_ci95"), "separable": c.get("separable")})  # fmt: skip
    return out + _no_llm_row_below_nollm(report)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("report", type=Path, nargs="?",
                    help="report.json written by q2rec report (default: the dataset's report)")  # fmt: skip


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    if args.report is None:
        from data_prep.artifacts import ArtifactPaths

        args.report = (
            ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts).report / "report.json"
        )
    try:
        report = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.report}: {exc}", file=sys.stderr)
        return 2
    print(
        "| target | goal | NDCG@10 gain | difference 95% CI | beyond noise | met |\n|---|---|---:|---|---|---|"
    )
    for r in check(report):
        gain = f"{r['gain']:+.1%}" if r["gain"] is not None else ""
        print(f"| {r['target']} | {r['goal']} | {gain} | {r['ci95'] or ''} | {r['separable']} | "
              f"{'yes' if r['met'] else 'NO'} |")  # fmt: skip
    return 0
