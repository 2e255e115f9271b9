"""Benchmark: CF quality on ML-100K test against the issue's bars, with popularity as the in-run baseline.

Trains (or reuses) pop, EASE and SASRec with ``training.cf``, evaluates them through ``tune.evaluate``
and prints a table of test Recall@10 and NDCG@10, each model's ratio to popularity, and whether each bar
is met. Protocol: ML-100K, chronological
leave-one-out, full ranking over all 1,682 items with the input history masked.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data_prep.prepare import ensure_prepared
from training.cf import train
from tune.evaluate import run

BARS = {  # model: (min Recall@10, min NDCG@10) on test
    "sasrec": (0.16, 0.085),
    "ease": (0.14, 0.0),
}
MIN_RATIO_OVER_POP = 1.6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("artifacts/ml-100k/bench_cf_quality.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    seconds = {}
    for name in ("pop", "ease", "sasrec"):
        t1 = time.perf_counter()
        train(ensure_prepared("ml-100k"), name, num_cpus=2)
        seconds[name] = round(time.perf_counter() - t1, 1)
    report = run("ml-100k", ["pop", "ease", "sasrec"], out=args.out)
    res = report["results"]
    pop_r = res["pop"]["test"]["Recall@10"]
    print("| model | Recall@10 | NDCG@10 | Recall@10 / pop | bar (R@10, N@10, x pop) | met | train s |")
    print("|---|---:|---:|---:|---|---|---:|")
    summary = []
    for name in ("pop", "ease", "sasrec"):
        t = res[name]["test"]
        ratio = t["Recall@10"] / pop_r
        bar = BARS.get(name)
        met = (
            "-"
            if bar is None
            else str(t["Recall@10"] >= bar[0] and t["NDCG@10"] >= bar[1] and ratio >= MIN_RATIO_OVER_POP)
        )
        bar_txt = "-" if bar is None else f">= {bar[0]}, >= {bar[1]}, >= {MIN_RATIO_OVER_POP}x"
        secs = seconds[name]
        print(
            f"| {name} | {t['Recall@10']:.4f} | {t['NDCG@10']:.4f} | {ratio:.2f}x | {bar_txt} | {met} | {secs} |"
        )
        summary.append(f"{name} R@10 {t['Recall@10']:.4f} N@10 {t['NDCG@10']:.4f} ({ratio:.2f}x pop)")
    print(f"summary: {'; '.join(summary)}; total {time.perf_counter() - t0:.0f}s")
    print(json.dumps(report["protocol"], indent=1))


if __name__ == "__main__":
    main()
