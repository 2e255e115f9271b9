"""Benchmark: SASRec's training step against the machine's matmul peak and the step it replaced, and (with
``--train``) a training run with the defaults a user gets, against published quality, in the same run.

    python bench/sasrec_train.py --dataset ../shared/datasets/ml-1m [--steps N] [--train [--set sasrec.FIELD=V ...]]

The dataset is prepared as ``q2rec prepare`` does (chronological leave-one-out); ML-1M is research-only:
read it from where it lies, never copy it into the repository.

- **peak**: this box's best bfloat16 matmul GFLOP/s at the shape that bounds the step (a chunk of positions
  × hidden times hidden × items: the full softmax's scores) and at a square 2,048 (what AMX does at a
  friendly shape);
- **step**: the same batches through one training step with the defaults' network, its full-softmax loss
  computed as it was (the positions × items logits materialised in bfloat16, copied to float32,
  ``cross_entropy``) and as it is (``actors.cf.softmax_loss``: chunks, never the whole matrix); positions a
  second, seconds an epoch, and the step's model GFLOP/s (6 × items × hidden per position for the output
  layer, 36 × hidden² per position and block for the dense layers; attention left out) against the peak;
- **train** (``--train``): ``q2rec train --models sasrec --force`` as a user runs it (a Ray task, early
  stopping on validation NDCG@10, the best epoch kept; ``--set`` overrides a field as on the command line),
  then ``q2rec evaluate``: wall time, epochs, valid
  and test NDCG@10 and Recall@10 (full ranking, the history masked), against the published figures for
  SASRec with full cross-entropy on ML-1M under the same protocol (test NDCG@10 0.1821; 0.1684 with a
  sampled softmax) and the goal of 0.168 in 30 minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from actors.cf.overrides import add_set_argument, parse_overrides
from actors.cf.sasrec import SASRec, SASRecConfig, length_batches, training_windows
from actors.cf.softmax_loss import chunk_rows, full_softmax_cross_entropy
from data_prep.corpus import Corpus
from data_prep.prepare import ensure_prepared

GOAL_NDCG, GOAL_MINUTES = 0.168, 30.0
PUBLISHED = {"full cross-entropy": 0.1821, "sampled softmax": 0.1684}  # ML-1M, leave-one-out, full ranking


def bf16_peak(m: int, k: int, n: int, repeats: int = 20) -> float:
    """Best bfloat16 GFLOP/s of an (m, k) @ (k, n) product into a reused buffer."""
    a = torch.randn(m, k).bfloat16()
    b = torch.randn(k, n).bfloat16()
    out = torch.empty(m, n, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def plain_loss(states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The full softmax as it was: the whole positions × items logits, then cross_entropy in float32."""
    return nn.functional.cross_entropy((states @ weight.to(states.dtype).T).float(), targets)


def step_speed(corpus: Corpus, cfg: SASRecConfig, loss_fn, steps: int) -> tuple[float, float]:
    """(positions per second, seconds per step) of ``steps`` training steps after three warm-up steps."""
    torch.manual_seed(0)
    model = SASRec(cfg)
    model._build(corpus.n_items)
    net = model.net
    inputs, targets = training_windows(corpus.train_seqs, cfg.max_len)
    lengths = (inputs > 0).sum(axis=1)
    batches = length_batches(lengths, cfg.batch_size, np.random.default_rng(0))
    batches = batches[: steps + 3] if steps else batches  # 0: a whole epoch (its first three untimed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    done, t0 = 0, 0.0
    for i, idx in enumerate(batches):
        if i == 3:
            done, t0 = 0, time.perf_counter()
        width = int(lengths[idx].max())
        seq, tgt = torch.from_numpy(inputs[idx, -width:]), torch.from_numpy(targets[idx, -width:])
        keep = tgt > 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            states = net(seq)[keep]
        loss = loss_fn(states, net.item_emb.weight[1:], tgt[keep] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += int(keep.sum())
    seconds = time.perf_counter() - t0
    return done / seconds, seconds / (len(batches) - 3)


def train_run(dataset: str, artifacts: str | None, overrides: dict) -> dict:
    from training.cf import load_trained, train
    from tune.evaluate import run

    paths = ensure_prepared(dataset, artifacts)
    t0 = time.perf_counter()
    train(paths, "sasrec", overrides, num_cpus=2, force=True)
    seconds = time.perf_counter() - t0
    info = load_trained(paths, "sasrec", overrides).fit_info
    res = run(dataset, ["sasrec"], artifacts_root=artifacts, overrides={"sasrec": overrides})
    res = res["results"]["sasrec"]
    return {"seconds": seconds, "info": info, "valid": res["valid"], "test": res["test"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k", help="a dataset name or folder, as for q2rec prepare")
    ap.add_argument("--artifacts", default=None, help="artifacts root (default: q2rec's)")
    ap.add_argument("--steps", type=int, default=0, help="timed training steps per loss (0: an epoch; a few "
                    "steps are a sample of batches, and the ratio varies with it)")  # fmt: skip
    ap.add_argument("--train", action="store_true", help="also train (the defaults, or --set) and evaluate")
    add_set_argument(ap, help="with --train: a SASRec config field (repeatable), as for q2rec train")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.overrides).get("sasrec", {})
    corpus = Corpus.load(ensure_prepared(args.dataset, args.artifacts))
    cfg = SASRecConfig()
    n, d = corpus.n_items, cfg.hidden
    positions = int(sum(max(len(s) - 1, 0) for s in corpus.train_seqs))
    print(f"{args.dataset}: {corpus.n_users:,} users × {n:,} items, {positions:,} training positions; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; SASRec defaults: length {cfg.max_len}, "
          f"batch {cfg.batch_size}, hidden {d}, {cfg.blocks} blocks, bf16 {cfg.bf16}")  # fmt: skip
    rows = min(chunk_rows(n), 4096)  # the positions of one chunk of the loss's scores
    shape_peak = bf16_peak(rows, d, n)
    square_peak = bf16_peak(2048, 2048, 2048, repeats=5)
    flop = 6 * n * d + 36 * d * d * cfg.blocks  # per position: output layer + dense block layers
    print(
        "\n| step (full softmax) | positions/s | s/step | s/epoch | model GFLOP/s | of the bf16 peak at its shape |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    speed = {}
    for label, fn in (("before: whole logits + cross_entropy", plain_loss),
                      ("now: softmax_loss chunks", full_softmax_cross_entropy)):  # fmt: skip
        pos_s, step_s = step_speed(corpus, cfg, fn, args.steps)
        speed[label] = pos_s
        gflops = flop * pos_s / 1e9
        print(f"| {label} | {pos_s:,.0f} | {step_s:.3f} | {positions / pos_s:.1f} | {gflops:.1f} | "
              f"{gflops / shape_peak:.0%} |")  # fmt: skip
    before, now = speed.values()
    print(f"\nnow / before: **{now / before:.2f}×**; bf16 matmul peak at ({rows} × {d}) @ "
          f"({d} × {n}): {shape_peak:.0f} GFLOP/s; at 2,048³: {square_peak:.0f} GFLOP/s")  # fmt: skip
    if args.train:
        r = train_run(args.dataset, args.artifacts, overrides)
        info, test = r["info"], r["test"]
        minutes = r["seconds"] / 60
        print(
            "\n| SASRec | train min | epochs (best) | softmax | valid NDCG@10 | test NDCG@10 | test Recall@10 |"
        )
        print("|---|---:|---:|---|---:|---:|---:|")
        label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
        print(f"| q2rec ({label}) | {minutes:.1f} | {info['epochs_run']} ({info['best_epoch']}) | {info['softmax']} | "
              f"{r['valid']['NDCG@10']:.4f} | {test['NDCG@10']:.4f} | {test['Recall@10']:.4f} |")  # fmt: skip
        for name, value in PUBLISHED.items():
            print(f"| published SASRec, {name} (ML-1M) | | | | | {value:.4f} | |")
        met = test["NDCG@10"] >= GOAL_NDCG and minutes <= GOAL_MINUTES
        print(f"\ngoal (test NDCG@10 >= {GOAL_NDCG} in <= {GOAL_MINUTES:.0f} min of training): "
              f"{'met' if met else 'not met'} ({test['NDCG@10']:.4f} in {minutes:.1f} min)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
