"""Benchmark: every offline stage on synthetic datasets of growing size, with time, memory and growth.

    python bench/scale.py [--sizes 10000x10000,100000x100000,100000x1000000] [--artifacts /tmp/q2rec-scale]
                          [--epochs 3] [--trials 20] [--stages generate,train_ease,...] [--force]

Each stage is the project's own CLI in a subprocess (the Ray cluster it starts included): generate
(``data_prep.synthetic``: prepare and split), train_ease, train_sasrec (popularity too: seconds), index
(metadata text, bf16, the
default index kind), branches (both branches' top-N for valid and test users, ``tune.branches_store``),
search (``tune.search`` over the cached branches) and evaluate (``tune.evaluate``: full ranking of pop and
SASRec on valid and test). For each (stage, size) the table gives the wall time, the peak resident memory
of the stage's whole process tree (RSS summed, sampled every 0.2 s; and PSS summed, every second, which
counts a page shared by several processes, such as Ray's object store, once in all) and the bytes it wrote. A stage that refuses a
size (EASE's memory check) shows its error text instead. Per stage, the growth exponents are the slopes of
log time and log memory against log users and log items over the sizes run.

Baselines in the same run: per catalog size, exact search against the default approximate index (IVF,
nprobe tuned to recall@10 0.95) on 1,000 catalog items as queries (QPS in batches of 256 and recall@10);
and at the largest size where the full softmax fits in memory (SASRec's own estimate), SASRec with the full
softmax against the sampled one (seconds per epoch and valid NDCG@10 after ``--softmax-epochs``).

A stage's result is kept in ``<dataset>/bench/<stage>.json`` and reused while its output is there, so a
long run can be resumed; ``--force`` measures again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("generate", "train_ease", "train_sasrec", "index", "branches", "search", "evaluate")
GIB = 1024**3


def dataset_name(users: int, items: int) -> str:
    return f"synthetic-{users}x{items}-s0"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def tree_memory(pid: int, pss: bool = False) -> int:
    """Bytes resident in the process tree of ``pid``: the sum of its RSS, or with ``pss`` of its PSS
    (proportional set size: a page shared by n processes, such as Ray's object store mapped into every
    worker, counts 1/n in each, so the sum is what the tree really holds)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
            total += p.memory_full_info().pss if pss else p.memory_info().rss
    return total


def run_measured(cmd: list[str], log_file: Path) -> dict:
    """Run ``cmd``; its wall time, the peak RSS and peak PSS of its process tree (RSS every 0.2 s, PSS every
    second), its exit code and its last lines."""
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "RAY_AIR_NEW_OUTPUT": "0", "PYTHONPATH": str(ROOT)}  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    peak = {"rss": 0, "pss": 0}
    with log_file.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        done = threading.Event()

        def sample() -> None:
            tick = 0
            while not done.wait(0.2):
                peak["rss"] = max(peak["rss"], tree_memory(proc.pid))
                tick += 1
                if tick % 5 == 0:
                    peak["pss"] = max(peak["pss"], tree_memory(proc.pid, pss=True))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
    tail = [line for line in log_file.read_text().splitlines() if line.strip()][-3:]
    return {"rc": rc, "wall_s": round(wall, 2), "peak_rss_gib": round(peak["rss"] / GIB, 3),
            "peak_pss_gib": round(peak["pss"] / GIB, 3), "tail": tail}  # fmt: skip


BRANCHES = """
import sys
from data_prep.artifacts import ArtifactPaths
from data_prep.corpus import Corpus
from actors.cf.overrides import parse_overrides
from tune.branches_store import load_or_compute
paths = ArtifactPaths.for_dataset(sys.argv[1], sys.argv[2])
corpus = Corpus.load(paths)
for stage in ("valid", "test"):
    b = load_or_compute(paths, corpus, stage, "sasrec", cf_overrides=parse_overrides(sys.argv[3:]).get("sasrec"))
    print(stage, len(b.users), "users, cf", b.cf.mode, b.cf.ids.shape, "retrieval", b.retrieval.ids.shape)
"""


def sasrec_overrides(args) -> list[str]:
    """SASRec's settings at every size: a few epochs, at a learning rate and dropout that learn in them."""
    return [f"epochs={args.epochs}", "lr=0.003", "dropout=0.2"]


def stage_command(stage: str, name: str, users: int, items: int, artifacts: Path, args) -> list[str]:
    py, sets = sys.executable, [a for kv in sasrec_overrides(args) for a in ("--set", f"sasrec.{kv}")]
    common = ["--dataset", name, "--artifacts", str(artifacts)]
    return {
        "generate": [py, "-m", "q2rec", "synthetic", "--users", str(users), "--items", str(items),
                     "--artifacts", str(artifacts)],
        "train_ease": [py, "-m", "q2rec", "train", *common, "--models", "ease", "--force"],
        "train_sasrec": [py, "-m", "q2rec", "train", *common, "--models", "pop,sasrec", *sets, "--force"],
        "index": [py, "-m", "q2rec", "index", *common, "--text", "metadata", "--bf16", "--force"],
        "branches": [py, "-c", BRANCHES, name, str(artifacts), *(f"sasrec.{kv}" for kv in sasrec_overrides(args))],
        "search": [py, "-m", "q2rec", "search", *common, "--cf", "sasrec", "--trials", str(args.trials), *sets],
        "evaluate": [py, "-m", "q2rec", "evaluate", *common, "--models", "pop,sasrec", *sets,
                     "--out", str(artifacts / name / "bench" / "evaluate_report.json")],
    }[stage]  # fmt: skip


def run_stage(stage: str, users: int, items: int, artifacts: Path, args) -> dict:
    name = dataset_name(users, items)
    folder = artifacts / name
    record = folder / "bench" / f"{stage}.json"
    if record.is_file() and not args.force:
        return json.loads(record.read_text())
    from data_prep.artifacts import ArtifactPaths

    paths = ArtifactPaths.for_dataset(name, str(artifacts))
    # a stage measured is a stage computed: the caches its tool would reuse go first (train and index
    # take --force)
    for cache in {"branches": [paths.branches], "search": [paths.tune, paths.fusion]}.get(stage, []):
        if cache.is_dir():
            shutil.rmtree(cache)
        elif cache.is_file():
            cache.unlink()
    before = folder_bytes(folder)
    print(f"  {name} {stage} ...", flush=True)
    out = run_measured(
        stage_command(stage, name, users, items, artifacts, args), folder / "bench" / f"{stage}.log"
    )
    out |= {
        "stage": stage,
        "users": users,
        "items": items,
        "output_gib": round((folder_bytes(folder) - before) / GIB, 4),
    }
    if out["rc"] != 0:
        out["error"] = next(
            (line for line in reversed(out["tail"]) if "error" in line.lower()), out["tail"][-1]
        )
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(out, indent=2) + "\n")
    return out


def growth(rows: list[dict], key: str) -> dict[str, float]:
    """Slopes of log(key) against log(users) and log(items) (least squares over the sizes run); with only
    sizes that grow users and items together, one joint slope against log(users * items) / 2."""
    ok = [r for r in rows if r["rc"] == 0 and r[key] > 0]
    if len(ok) < 2:
        return {}
    y = np.log([r[key] for r in ok])
    lu, li = np.log([r["users"] for r in ok]), np.log([r["items"] for r in ok])
    x = np.column_stack([np.ones(len(ok)), lu, li])
    if np.linalg.matrix_rank(x) == 3:
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        return {"users": round(float(coef[1]), 2), "items": round(float(coef[2]), 2)}
    coef = np.polyfit((lu + li) / 2, y, 1)
    return {"joint": round(float(coef[0]), 2)}


def index_baseline(folder: Path, queries: int = 1000) -> list[dict]:
    """Exact flat search against the default approximate index (IVF, nprobe tuned to the target recall) on
    the same vectors. Where the index stage built an IVF index (above ``exact_max_items``) it is loaded,
    with the build time and recall it recorded; below, one is built here."""
    import json

    from actors.retriever import FaissRetriever, IndexConfig, build_index, index_recall, recall_sample

    vectors = np.ascontiguousarray(np.load(folder / "vectors.npy"), dtype=np.float32)
    sample = recall_sample(vectors, queries)
    q = sample.queries
    saved = json.loads((folder / "index.json").read_text())
    out = []
    for kind in ("flat", "ivf"):
        t0 = time.perf_counter()
        if kind == "ivf" and saved["config"]["kind"] == "ivf":
            retriever = FaissRetriever.load(folder)
            build_s = saved["build_s"]
        else:
            cfg = IndexConfig(kind=kind).resolved(len(vectors))
            retriever = FaissRetriever(
                build_index(vectors, cfg), vectors, np.arange(len(vectors)).astype(str), cfg
            )
            if kind == "ivf":  # the nprobe the default build would tune
                retriever._measure_recall()
                retriever.index.nprobe = retriever.config.ivf_nprobe
            build_s = time.perf_counter() - t0
        index, cfg = retriever.index, retriever.config
        t0 = time.perf_counter()
        for start in range(0, len(q), 256):
            index.search(q[start : start + 256], 11)
        qps = len(q) / (time.perf_counter() - t0)
        recall = 1.0 if kind == "flat" else index_recall(index, sample)
        out.append({"index": kind if kind == "flat" else f"ivf nlist={cfg.ivf_nlist} nprobe={cfg.ivf_nprobe}",
                    "build_s": round(build_s, 1), "qps": round(qps), "recall_at_10": round(recall, 4)})  # fmt: skip
    return out


def softmax_size(sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The largest (users, items) of ``sizes`` where SASRec's full softmax fits this machine's memory limit."""
    from actors.cf.base import ModelTooLarge
    from actors.cf.sasrec import SASRec, SASRecConfig

    model = SASRec(SASRecConfig(loss="full"))
    fits = []
    for users, items in sizes:
        try:
            model.check_fits(users, items)
            fits.append((users * items, (users, items)))
        except ModelTooLarge:
            pass
    return max(fits)[1] if fits else None


def softmax_baseline(name: str, artifacts: Path, epochs: int) -> list[dict]:
    """SASRec with the full and with the sampled softmax on the same data, seconds per epoch and valid
    NDCG@10 (on all valid users) after ``epochs``."""
    from actors.cf.base import ValidationSet
    from actors.cf.sasrec import SASRec, SASRecConfig
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus

    corpus = Corpus.load(ArtifactPaths.for_dataset(name, str(artifacts)))
    users = corpus.eval_users("valid")
    valid = ValidationSet(corpus.histories("valid", users), corpus.target("valid")[users])
    out = []
    for loss in ("full", "sampled"):
        t0 = time.perf_counter()
        # the settings of sasrec_overrides
        cfg = SASRecConfig(epochs=epochs, lr=0.003, dropout=0.2, loss=loss, progress=False)
        model = SASRec(cfg).fit(corpus.train_seqs, corpus.n_items)
        per_epoch = (time.perf_counter() - t0) / epochs
        out.append(
            {
                "softmax": loss,
                "s_per_epoch": round(per_epoch, 1),
                "valid_ndcg10": round(valid.ndcg10(model), 4),
            }
        )
    return out


def llm_sample(name: str, artifacts: Path, items: int, users: int) -> list[dict]:
    """The LLM stages on a sample (GPU work at full size): enrichment of the first ``items`` items and the
    valid and test queries of the first ``users`` users, with the packaged model on this box's engine;
    tokens and seconds per item and per user, for the capacity model. They run on a copy of the prepared
    dataset under ``<artifacts>/llm-sample``: a partial enrichment or query file in the dataset itself
    would stand for the whole catalog in every later stage (Serve, the branches)."""
    import pandas as pd

    from data_prep.artifacts import ArtifactPaths

    source = ArtifactPaths.for_dataset(name, str(artifacts))
    root = artifacts / "llm-sample"
    paths = ArtifactPaths.for_dataset(name, str(root))
    if paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True)
    for file in ("interactions.parquet", "items.parquet", "train.parquet", "valid.parquet", "test.parquet",
                 "prepare.json"):  # fmt: skip
        shutil.copy(source.root / file, paths.root / file)
    common = ["--dataset", name, "--artifacts", str(root)]
    py = sys.executable
    out = []
    jobs = [("enrichment", "item", [py, "-m", "q2rec", "enrich", *common, "--limit", str(items)], paths.items_enriched, items),
            ("queries", "user", [py, "-m", "q2rec", "queries", *common, "--limit-users", str(users)], paths.user_queries, users)]  # fmt: skip
    for job, unit, cmd, result, count in jobs:
        run = run_measured(cmd, paths.root / "bench" / f"llm_{job}.log")
        if run["rc"] != 0:
            out.append({"job": job, "error": run["tail"][-1]})
            continue
        frame = pd.read_parquet(result)
        out.append({"job": job, "unit": unit, "count": count, "wall_s": run["wall_s"],
                    "peak_rss_gib": run["peak_rss_gib"], "rows": len(frame),
                    "llm_rows": int((frame["source"] == "llm").sum()),
                    "prompt_tokens": round(frame["prompt_tokens"].sum() / count, 1),
                    "completion_tokens": round(frame["completion_tokens"].sum() / count, 1)})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000x10000,100000x100000,100000x1000000",
                    help="USERSxITEMS, comma-separated")  # fmt: skip
    ap.add_argument("--artifacts", type=Path, default=Path("/tmp/q2rec-scale"))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--epochs", type=int, default=3, help="SASRec epochs at every size")
    ap.add_argument("--softmax-epochs", type=int, default=1, help="epochs of the full vs sampled baseline")
    ap.add_argument("--trials", type=int, default=20, help="fusion search trials")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--llm-sample", default="128,64", help="ITEMS,USERS of the LLM sample ('' to skip)")
    ap.add_argument("--force", action="store_true", help="measure stages again even when recorded")
    args = ap.parse_args()
    sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error(f"--stages: unknown {bad}; choose from {','.join(STAGES)}")
    rows = []
    for users, items in sizes:
        for stage in stages:
            rows.append(run_stage(stage, users, items, args.artifacts, args))
            if stage == "generate" and rows[-1]["rc"] != 0:
                break
    print("\n| stage | users | items | wall s | peak RSS GiB | peak PSS GiB | output GiB | result |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        result = "ok" if r["rc"] == 0 else f"refused: {r.get('error', '')[:200]}"
        pss = (
            f"{r['peak_pss_gib']:.2f}" if "peak_pss_gib" in r else "n/a"
        )  # a record from before PSS was kept
        print(f"| {r['stage']} | {r['users']:,} | {r['items']:,} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{pss} | {r['output_gib']:.3f} | {result} |")  # fmt: skip
    print("\n| stage | time exponent | memory exponent |")
    print("|---|---|---|")
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage]
        t, m = growth(mine, "wall_s"), growth(mine, "peak_rss_gib")
        fmt = lambda g: ", ".join(f"{k} {v}" for k, v in g.items()) or "n/a"  # noqa: E731
        print(f"| {stage} | {fmt(t)} | {fmt(m)} |")
    if args.no_baselines:
        return
    print("\n| catalog | index | build s | QPS | recall@10 | QPS vs flat |")
    print("|---:|---|---:|---:|---:|---:|")
    for users, items in sizes:
        folder = args.artifacts / dataset_name(users, items) / "index" / "metadata"
        if not (folder / "index.json").is_file():
            continue
        res = index_baseline(folder)
        for r in res:
            print(f"| {items:,} | {r['index']} | {r['build_s']} | {r['qps']:,} | {r['recall_at_10']} | "
                  f"{r['qps'] / res[0]['qps']:.1f}x |")  # fmt: skip
    users, items = sizes[0]
    if args.llm_sample:
        n_items, n_users = (int(x) for x in args.llm_sample.split(","))
        print(f"\nLLM stages on a sample of {dataset_name(users, items)} (packaged model, this box's engine; "
              "wall time includes the engine's start):\n")  # fmt: skip
        print("| job | per | sample | wall s | rows (llm) | prompt tokens per | completion tokens per |")
        print("|---|---|---:|---:|---|---:|---:|")
        for r in llm_sample(dataset_name(users, items), args.artifacts, n_items, n_users):
            if "error" in r:
                print(f"| {r['job']} | failed: {r['error'][:150]} | | | | | |")
                continue
            print(f"| {r['job']} | {r['unit']} | {r['count']} | {r['wall_s']} | {r['rows']} ({r['llm_rows']}) | "
                  f"{r['prompt_tokens']} | {r['completion_tokens']} |")  # fmt: skip
    size = softmax_size(sizes)
    if size is None:
        print("\nSASRec's full softmax fits at none of these sizes: no full vs sampled baseline")
        return
    users, items = size
    print(f"\nSASRec full vs sampled softmax, {users:,} users x {items:,} items (the largest size where the full "
          f"softmax fits), {args.softmax_epochs} epoch(s):\n")  # fmt: skip
    print("| softmax | s / epoch | valid NDCG@10 |")
    print("|---|---:|---:|")
    rows = softmax_baseline(dataset_name(users, items), args.artifacts, args.softmax_epochs)
    for r in rows:
        print(f"| {r['softmax']} | {r['s_per_epoch']} | {r['valid_ndcg10']} |")
    print(f"\nsampled / full: {rows[1]['s_per_epoch'] / rows[0]['s_per_epoch']:.2f}x the time per epoch")


if __name__ == "__main__":
    main()
