"""Compare a written report with the project's quality targets (the report itself states numbers only).

    python -m tune.targets artifacts/ml-100k/report/report.json

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


TARGETS = (
    Target("fusion on EASE gains at least 20% test NDCG@10", "fused_adaptive_ease_vs_ease", ">= +20%",
           lambda c: c["ndcg10_gain"] >= 0.20),
    Target("fusion on SASRec: NDCG@10 not below, coverage and tail recall higher", "fused_adaptive_vs_sasrec",
           "NDCG@10 >=, Coverage@10 >, TailRecall@10 >",
           lambda c: _side(c, "NDCG@10")[0] >= _side(c, "NDCG@10")[1]
           and all(_side(c, m)[0] > _side(c, m)[1] for m in ("Coverage@10", "TailRecall@10"))),
    Target("the LLM branch adds to the no-LLM fusion", "fused_adaptive_ease_vs_fused_adaptive_ease_noenrich_noquery",
           "NDCG@10 difference >= 0", lambda c: c["ndcg10_gain"] >= 0),
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
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tune.targets", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.json written by python -m tune.report")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
