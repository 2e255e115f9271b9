"""Benchmark: what a better LLM would add, by SIMULATION: queries of controlled quality, searched and selected
exactly as the report's ``fused_<cf>_query`` row.

    python bench/llm_headroom.py [--artifacts artifacts] [--dataset ml-100k] [--cf sasrec] [--field auto]
                                 [--p 0,0.1,0.25,0.5,1] [--trials 200] [--seed 0]

No LLM runs here, and nothing here is a default anywhere else. The query source is an *oracle of controlled
quality*: for a seeded fraction p of the users, a user's query (valid and test alike) is the **target** item's
own metadata field (``--field``: the genres on MovieLens, the category path on Amazon; never the title), the
kind of guess a strong LLM could make of the next item's kind; for the other users it is the same field of a
random other item (a confident wrong guess). For each p, the fusion and the retrieval weights (last, recent,
llm; every range from 0) are searched on validation and the final config is chosen by the one-standard-error
rule among this search and the no-LLM one (``tune.search.choose``, what the report runs), then applied to
test. The table gives the selected LLM weight, the selected config's test NDCG@10 against the no-LLM row's
(its own selection among the no-LLM search's methods, as the report's ``fused_<cf>_nollm``) with the 95%
paired bootstrap interval of the difference, and the best-on-validation config's difference.

Needs a prepared dataset with the metadata index and the trained ``--cf`` model (``make demo`` or
``q2rec``-style stages on any dataset). Each p gets a scratch folder under ``<artifacts>/_headroom/`` that
links the dataset's files and holds its own queries, branch lists and searches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FIELDS = ("genres", "categories", "category")  # --field auto: the first of these the catalog has
LINKED = ("interactions.parquet", "items.parquet", "train.parquet", "valid.parquet", "test.parquet", "prepare.json",
          "index/metadata")  # fmt: skip


def pick_field(items: pd.DataFrame, field: str) -> str:
    if field != "auto":
        if field not in items.columns or field == "title":
            raise ValueError(
                f"--field {field!r}: not a non-title column of items.parquet {list(items.columns)}"
            )
        return field
    for f in FIELDS:
        if f in items.columns:
            return f
    raise ValueError(
        f"--field auto: items.parquet has none of {FIELDS}; name a column ({list(items.columns)})"
    )


def oracle_queries(corpus, items: pd.DataFrame, field: str, p: float, seed: int = 0) -> pd.DataFrame:
    """``user_queries.parquet`` rows (``data_prep.queries.COLUMNS``) for the valid and test users: a seeded
    fraction ``p`` of the users (the same users at both stages) get the stage's target's ``field``
    (source ``oracle``), the others the field of a random other item (source ``decoy``)."""
    from data_prep.queries import COLUMNS

    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    text = items[field].fillna("").astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    informed = rng.random(corpus.n_users) < p
    rows = []
    for stage in ("valid", "test"):
        users = corpus.eval_users(stage)
        targets = corpus.target(stage)[users]
        other = rng.integers(0, corpus.n_items - 1, len(users))
        other = other + (other >= targets)  # a uniformly random item other than the target
        for u, t, o in zip(users, targets, other, strict=True):
            q = text[t] if informed[u] else text[o]
            rows.append({"user_id": corpus.user_ids[u], "stage": stage, "key": f"oracle-{p}", "query": q,
                         "source": "oracle" if informed[u] else "decoy", "attempts": 0, "prompt_tokens": 0,
                         "completion_tokens": 0, "rejected": "", "queries": [q]})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def workspace(source: Path, target: Path, cf: str) -> None:
    """A scratch dataset folder that links ``source``'s inputs (never writing into them)."""
    if target.exists():
        shutil.rmtree(target)
    for name in (*LINKED, f"models/{cf}"):
        src = source / name
        if not src.exists():
            raise FileNotFoundError(f"{src}: prepare, index (--text metadata) and train {cf} first")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).symlink_to(src.resolve(), target_is_directory=src.is_dir())


def run_p(paths, corpus, cf: str, trials: int) -> dict:
    """The report's query row for the queries in ``paths``: the selected and best configs' test ranks and the
    no-LLM row's."""
    from actors.fusion_file import TunedFusion
    from tune.experiments import METHODS
    from tune.harness import metric_context
    from tune.rows import branch_pair, fused_metrics
    from tune.search import choose
    from tune.selection import candidates, select

    ctx = metric_context(corpus)
    valid, test = branch_pair(paths, corpus, cf, {})
    choice = choose(
        paths, corpus, cf, ("last", "recent", "llm"), valid, ctx, {"trials": trials, "methods": METHODS}
    )
    nollm = select(candidates("nollm", choice["searches"]["nollm"]), valid, ctx)["selected"]

    def ranks(c: dict) -> np.ndarray:
        tuned = TunedFusion.of(c, "candidate")
        m = fused_metrics(test, tuned.config, ctx, tuned.weights)
        return m["target_ranks"]

    return {"selected": choice["selected"], "best": choice["best"], "nollm": nollm,
            "ranks": {k: ranks(choice[k]) for k in ("selected", "best")} | {"nollm": ranks(nollm)}}  # fmt: skip


def headroom(source: Path, ps: list[float], cf: str, field: str, trials: int, seed: int) -> list[dict]:
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus
    from tune.metrics import ndcg_gains, paired_bootstrap

    base = ArtifactPaths(source)
    corpus = Corpus.load(base)
    items = pd.read_parquet(base.items)
    field = pick_field(items, field)
    rows = []
    for p in ps:
        paths = ArtifactPaths(source.parent / "_headroom" / source.name / f"p{p:g}")
        workspace(source, paths.root, cf)
        oracle_queries(corpus, items, field, p, seed).to_parquet(paths.user_queries, index=False)
        r = run_p(paths, corpus, cf, trials)
        sel, best, base_ranks = r["ranks"]["selected"], r["ranks"]["best"], r["ranks"]["nollm"]
        d, b = paired_bootstrap(sel, base_ranks), paired_bootstrap(best, base_ranks)
        rows.append({"p": p, "field": field, "selected": r["selected"]["name"],
                     "selected_llm_weight": r["selected"]["weights"]["llm"],
                     "best_llm_weight": r["best"]["weights"]["llm"],
                     "valid_ndcg10": round(r["selected"]["valid_ndcg10"], 4),
                     "test_ndcg10": round(float(ndcg_gains(sel, 10).mean()), 4),
                     "nollm_test_ndcg10": round(float(ndcg_gains(base_ranks, 10).mean()), 4),
                     "diff": round(d["diff"], 4), "ci95": [round(d["ci95_low"], 4), round(d["ci95_high"], 4)],
                     "best_diff": round(b["diff"], 4), "best_ci95": [round(b["ci95_low"], 4), round(b["ci95_high"], 4)]})  # fmt: skip
        print(f"p={p:g}: selected {rows[-1]['selected']} (llm weight {rows[-1]['selected_llm_weight']}), test "
              f"NDCG@10 {rows[-1]['test_ndcg10']} vs no-LLM {rows[-1]['nollm_test_ndcg10']}", flush=True)  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| p (users with an informed query) | selected | LLM weight | test NDCG@10 | no-LLM test NDCG@10 | "
             "difference [95% CI] | best on valid: LLM weight, difference [95% CI] |",
             "|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['p']:g} | {r['selected']} | {r['selected_llm_weight']:.2f} | {r['test_ndcg10']:.4f} | "
                     f"{r['nollm_test_ndcg10']:.4f} | {r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | "
                     f"{r['best_llm_weight']:.2f}, {r['best_diff']:+.4f} [{r['best_ci95'][0]:+.4f}, "
                     f"{r['best_ci95'][1]:+.4f}] |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = [r["p"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    diff = np.array([r["diff"] for r in rows])
    err = np.array([[r["diff"] - r["ci95"][0], r["ci95"][1] - r["diff"]] for r in rows]).T
    ax.errorbar(p, diff, yerr=err, marker="o", capsize=4, label="selected config - no-LLM row (95% CI)")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("p: share of users whose simulated query names the target's kind")
    ax.set_ylabel("test NDCG@10 difference")
    ax2 = ax.twinx()
    ax2.plot(
        p, [r["selected_llm_weight"] for r in rows], "s--", color="tab:orange", label="selected LLM weight"
    )
    ax2.set_ylabel("selected LLM weight")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--cf", default="sasrec", choices=["sasrec", "ease"])
    ap.add_argument(
        "--field", default="auto", help=f"the items' column the oracle names (auto: first of {FIELDS})"
    )
    ap.add_argument("--p", default="0,0.1,0.25,0.5,1", help="shares of informed users, comma-separated")
    ap.add_argument(
        "--trials", type=int, default=200, help="Ray Tune trials per search (the report's default)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from runtime.ray_cluster import init_ray

    source = Path(args.artifacts) / args.dataset
    try:
        ps = [float(x) for x in args.p.split(",") if x.strip()]
        init_ray(quiet=True)
        rows = headroom(source, ps, args.cf, args.field, args.trials, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = source / "headroom"
    out.mkdir(exist_ok=True)
    (out / "headroom.json").write_text(
        json.dumps({"cf": args.cf, "trials": args.trials, "rows": rows}, indent=2)
    )
    png = plot(rows, out / "headroom.png", f"{args.dataset}, fused_{args.cf}_query: simulated query quality")
    print(f"\nSIMULATION (oracle queries, no LLM): {args.dataset}, backbone {args.cf}, {args.trials} trials per "
          f"search, field {rows[0]['field']!r}\n")  # fmt: skip
    print(table(rows))
    print(f"\nwrote {out / 'headroom.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
