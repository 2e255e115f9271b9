"""Benchmark: RecBole's EASE and SASRec against q2rec's, on the same leave-one-out split, in one run.

RecBole (1.2.1) is what most recommender researchers would reach for. Its own dependencies would break this
project's environment (it pins an old Ray), so the bench installs it into a venv of its own under
``~/.cache/q2rec/recbole-venv`` (``--venv``), once, with its imports and never its pins: the CPU torch
wheel, ``recbole --no-deps``, numpy < 2 and pandas < 3 (RecBole uses ``np.float_`` and in-place
``fillna`` on column views, which numpy 2 and pandas 3 removed), and the small modules it imports. One
compatibility shim is applied at run time in that venv, not by editing RecBole's files: ``torch.load``
defaults to ``weights_only=False`` for its own checkpoints (torch >= 2.6 changed the default). RecBole's
``quick_start`` (which imports Ray Tune) is not used; the runner calls its config, dataset, model and trainer
directly.

Both sides see the same split: q2rec's prepared train/valid/test (chronological leave-one-out) is written as
RecBole atomic files whose timestamps are each user's sequence positions, and RecBole splits it with
``LS: valid_and_test``, order ``TO``, full ranking, the history masked (the protocol check: EASE's test
NDCG@10 must agree within noise). Per model and side: wall time (fit including the λ search or the epochs
to the best validation NDCG@10 under early stopping), the best valid NDCG@10, test NDCG@10 and Recall@10.

    python bench/recbole_peer.py [--dataset ml-100k | --dataset ../shared/datasets/ml-1m] [--models ease,sasrec]
                                 [--epochs 200] [--patience 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

VENV = Path.home() / ".cache" / "q2rec" / "recbole-venv"
REQUIREMENTS = ["recbole==1.2.1"]  # installed --no-deps
IMPORTS = ["numpy<2", "pandas<3", "scipy", "scikit-learn", "pyyaml", "tqdm", "colorlog", "colorama",
           "texttable", "tensorboard", "psutil", "thop"]  # fmt: skip
TORCH = "torch==2.13.0"

RUNNER = r"""
import json, sys, time
import torch
_load = torch.load
def _load_full(*a, **k):  # RecBole saves whole checkpoints (torch >= 2.6 loads weights only by default)
    k.setdefault("weights_only", False)
    return _load(*a, **k)
torch.load = _load_full
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=spec["config"])
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train, valid, test = data_preparation(config, dataset)
model = get_model(config["model"])(config, train.dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
t0 = time.perf_counter()
best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False)
fit_s = time.perf_counter() - t0
result = trainer.evaluate(test, load_best_model=True, show_progress=False)
print("RESULT " + json.dumps({"fit_s": fit_s, "valid_ndcg10": float(best_valid),
                             "epochs": len(getattr(trainer, "train_loss_dict", {})) or None,
                             "test": {k: float(v) for k, v in result.items()}}))
"""


def ensure_venv(venv: Path) -> Path:
    """RecBole's own venv (created once); returns its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".q2rec-recbole"
    if stamp.is_file():
        return python
    print(f"installing RecBole into {venv} (once; its pins never touch the project's venv)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *IMPORTS, TORCH], check=True)
    subprocess.run([*pip, "--no-deps", *REQUIREMENTS], check=True)
    stamp.write_text("ok\n")
    return python


def write_atomic(corpus, folder: Path, name: str) -> int:
    """The prepared split as one RecBole ``.inter`` file: each user's train, then valid, then test item,
    timestamped by position, so RecBole's ordered leave-one-out gives q2rec's valid and test targets."""
    rows = []
    for u, seq in enumerate(corpus.train_seqs):
        items = list(seq)
        if corpus.valid_target[u] >= 0:
            items.append(int(corpus.valid_target[u]))
        if corpus.test_target[u] >= 0:
            items.append(int(corpus.test_target[u]))
        rows.extend((u, i, t) for t, i in enumerate(items))
    frame = pd.DataFrame(rows, columns=["user_id:token", "item_id:token", "timestamp:float"])
    (folder / name).mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name / f"{name}.inter", sep="\t", index=False)
    return len(frame)


def recbole_config(model: str, args: argparse.Namespace, data_path: Path, work: Path) -> dict:
    config = {
        "data_path": str(data_path), "checkpoint_dir": str(work / "saved"), "log_wandb": False,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "device": "cpu", "use_gpu": False,
        "seed": 0, "reproducibility": True, "show_progress": False, "state": "WARNING",
        "eval_batch_size": 4096, "save_dataset": False, "save_dataloaders": False,
    }  # fmt: skip
    if model == "SASRec":  # q2rec's defaults: 2 blocks of width 64 (FFN too), 1 head, length 50, dropout 0.5
        config |= {
            "epochs": args.recbole_epochs or args.epochs, "stopping_step": args.patience,
            "train_batch_size": args.batch, "loss_type": "CE", "train_neg_sample_args": None,
            "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": 64, "inner_size": 64, "n_layers": 2,
            "n_heads": 1, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "learning_rate": 1e-3,
        }  # fmt: skip
    else:
        config |= {"epochs": 1, "reg_weight": args.ease_lambda, "train_neg_sample_args": None}
    return config


def run_recbole(
    python: Path, model: str, args: argparse.Namespace, data_path: Path, name: str, work: Path
) -> dict:
    spec = {"model": model, "dataset": name, "threads": args.threads,
            "config": recbole_config(model, args, data_path, work)}  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(python), "-c", RUNNER, json.dumps(spec)], capture_output=True, text=True, cwd=work
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"RecBole {model} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = wall
    return result


def run_q2rec(model: str, corpus, args: argparse.Namespace) -> dict:
    """q2rec's model with its defaults (EASE: its λ search; SASRec: its early stopping) and its harness."""
    import torch

    from actors.cf import MODELS, ValidationSet
    from tune.harness import evaluate_scorer

    torch.set_num_threads(args.threads)
    cls = MODELS[model]
    config = cls.Config()
    if model == "sasrec":
        config.epochs, config.patience, config.progress = args.epochs, args.patience, False
    users = corpus.eval_users("valid")
    valid = ValidationSet(corpus.histories("valid", users), corpus.valid_target[users])
    t0 = time.perf_counter()
    cf = cls(config).fit(corpus.train_seqs, corpus.n_items, valid)
    fit_s = time.perf_counter() - t0
    test = evaluate_scorer(lambda u, hist: cf.score(hist), corpus, "test")
    info = cf.fit_info
    if model == "ease":
        best_valid = info["valid_ndcg10_by_lambda"][str(info["lam"])]
    else:
        best_valid = info.get("best_valid_ndcg10")
    return {"fit_s": fit_s, "valid_ndcg10": best_valid, "lam": info.get("lam"), "epochs": info.get("epochs_run"),
            "test": {"ndcg@10": test["NDCG@10"], "recall@10": test["Recall@10"]}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k", help="ml-100k, or a generic CSV folder (read in place)")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--models", default="ease,sasrec")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument(
        "--recbole-epochs",
        type=int,
        help="RecBole SASRec's epoch cap (default: --epochs); its "
        "epochs train on every prefix of every sequence, minutes each on 2 cores",
    )
    ap.add_argument("--patience", type=int, default=10, help="epochs without a better valid NDCG@10")
    ap.add_argument("--batch", type=int, default=256, help="RecBole SASRec's training batch")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument(
        "--ease-lambda", type=float, default=None, help="RecBole EASE's λ (default: q2rec's pick)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--venv", type=Path, default=VENV)
    args = ap.parse_args(argv)
    from data_prep.corpus import Corpus
    from data_prep.prepare import ensure_prepared

    paths = ensure_prepared(args.dataset, args.artifacts)
    corpus = Corpus.load(paths)
    python = ensure_venv(args.venv)
    work = paths.root / "recbole"
    name = f"q2rec-{paths.root.name}"
    n = write_atomic(corpus, work / "data", name)
    print(f"{paths.root.name}: {corpus.n_users:,} users, {corpus.n_items:,} items, {n:,} interactions; "
          f"{args.threads} threads")  # fmt: skip
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        ours = run_q2rec(model, corpus, args)
        if model == "ease" and args.ease_lambda is None:
            args.ease_lambda = float(ours.get("lam") or 500.0)
        theirs = run_recbole(
            python, {"ease": "EASE", "sasrec": "SASRec"}[model], args, work / "data", name, work
        )
        rows.append((model, ours, theirs))
    print("| model | side | fit s | epochs | valid NDCG@10 | test NDCG@10 | test Recall@10 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, ours, theirs in rows:
        for side, r in (("q2rec", ours), ("RecBole", theirs)):
            valid = f"{r['valid_ndcg10']:.4f}" if r.get("valid_ndcg10") is not None else "—"
            epochs = r.get("epochs") or "—"
            print(f"| {model} | {side} | {r['fit_s']:.1f} | {epochs} | {valid} | {r['test']['ndcg@10']:.4f} | "
                  f"{r['test']['recall@10']:.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
