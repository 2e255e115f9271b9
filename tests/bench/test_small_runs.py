"""A small run of each benchmark that needs no dataset beyond the package, so none can rot (the benches
themselves are not in CI: they measure speed at sizes that take minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_catalog(tmp_path: Path, users: int, items: int, max_per_user: int):
    """A synthetic catalog with EASE trained as ``q2rec train`` saves it (without Ray) and the metadata index."""
    from actors.encoder import TextEncoder
    from actors.retriever import FaissRetriever, IndexConfig
    from data_prep.index import item_texts
    from data_prep.synthetic import SyntheticConfig, write
    from training.cf import build_config, fit_and_save, training_fingerprint

    paths = write(
        SyntheticConfig(users=users, items=items, min_per_user=5, max_per_user=max_per_user), tmp_path
    )
    config = build_config("ease")
    fit_and_save(str(paths.root), "ease", config, training_fingerprint(paths, "ease", config))
    texts = item_texts(paths, "metadata")
    vectors = TextEncoder().encode(texts["text"].tolist())
    FaissRetriever.build(vectors, texts["item_id"].tolist(), IndexConfig()).save(paths.index_dir("metadata"))
    return paths


def test_ease_fit(tmp_path, capsys):
    args = ["--users", "300", "--items", "200", "--per-user", "5", "13", "--baseline-items", "120"]
    assert bench("ease_fit").main([*args, "--artifacts", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| EASE | 200 |" in out and "| ALS (implicit) | 200 |" in out
    assert "| EASE before (dense float64, eigh) | 120 (cut) |" in out and "faster than before" in out


def test_eval_speed(capsys):
    """The large-catalog part on 70,000 items (past the chunked ranking's threshold): both paths agree."""
    args = ["--skip-ml", "--items", "70000", "--users", "40", "--repeat", "1", "--bandwidth-gib", "0.01"]
    assert bench("eval_speed").main(args) == 0
    out = capsys.readouterr().out
    assert "every target rank, every top-20 list, every metric" in out
    assert "| factorised | **ranking** (rank_batch) |" in out and "- after: " in out
    import torch

    assert torch.is_grad_enabled()  # the bench leaves autograd as it found it (training tests follow)


def test_single_process(tmp_path, capsys):
    """The bench-only single-process app alone (no Ray) on a tiny synthetic catalog (EASE, the metadata
    index): its top-10 equal the offline fusion's for known users, then it is timed."""
    from actors.fusion_file import FusionFile

    paths = tiny_catalog(tmp_path, users=120, items=200, max_per_user=15)
    FusionFile.model_validate({
        "config": {"method": "adaptive", "norm": "zscore", "n": 50, "a": 0.4, "b": 0.5, "c": 1.0},
        "weights": {"last": 1.0, "recent": 0.3, "llm": 0.0, "enriched": 0.0}, "cf": "ease", "valid": {},
    }).save(paths.fusion)  # fmt: skip
    args = ["--single-only", "--artifacts", str(paths.root), "--requests", "20", "--throughput-requests", "40",
            "--rounds", "2", "--check-users", "10"]  # fmt: skip
    assert bench("single_process").main(args) == 0
    out = capsys.readouterr().out
    assert "top-10 equal to the offline fusion for 10 of 10 users" in out
    assert "| single process | " in out


def test_llm_stages(tmp_path, capsys):
    """Both configurations (before, now) on a few items and users of the packaged ML-100K, with the limits."""
    args = ["--n", "4", "--batch", "4", "--decode-batch", "8", "--dataset-dir", str(tmp_path / "ml-100k")]
    assert bench("llm_stages").main(args) == 0
    out = capsys.readouterr().out
    assert "engine limits (now): prefill" in out
    for stage in ("enrich", "queries"):
        assert f"| {stage} | before | 128 |" in out and f"| {stage} | now | 32 |" in out


def test_recbole_peer(tmp_path, capsys):
    """RecBole's EASE in its own venv (installed once under ~/.cache/q2rec) against q2rec's on ML-100K: the
    same split gives the same validation NDCG@10 at the same λ (the protocol check)."""
    args = ["--models", "ease", "--artifacts", str(tmp_path)]
    assert bench("recbole_peer").main(args) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ease |")]
    valid = {r[2].strip(): float(r[5]) for r in rows}
    assert set(valid) == {"q2rec", "RecBole"} and abs(valid["q2rec"] - valid["RecBole"]) < 1e-3


def test_sasrec_train(tmp_path, capsys, ray_cluster):
    """Both full-softmax losses through a few training steps on the packaged ML-100K, with the peak; then a
    one-epoch fit as q2rec train runs it, evaluated, with the override named in its row."""
    args = ["--dataset", "ml-100k", "--steps", "2", "--artifacts", str(tmp_path), "--train",
            "--set", "sasrec.epochs=1", "--set", "sasrec.max_len=20"]  # fmt: skip
    assert bench("sasrec_train").main(args) == 0
    out = capsys.readouterr().out
    assert "| before: whole logits + cross_entropy |" in out and "| now: softmax_loss chunks |" in out
    assert "now / before: **" in out and "GFLOP/s; at 2,048³:" in out
    assert "| q2rec (epochs=1, max_len=20) | " in out and "| 1 (1) | full |" in out
    assert "goal (test NDCG@10 >= 0.168 in <= 30 min of training): not met" in out


def test_tune_search(tmp_path, capsys, ray_cluster):
    """The plain loop and the three Tune rows on a tiny synthetic catalog (EASE, the metadata index)."""
    paths = tiny_catalog(tmp_path, users=80, items=120, max_per_user=12)
    args = ["--artifacts", str(tmp_path), "--dataset", paths.root.name, "--cf", "ease", "--trials", "6"]
    assert bench("tune_search").main(args) == 0
    out = capsys.readouterr().out
    assert "ease, weights searched: last, recent" in out and "| plain loop (random configs) | 6 |" in out
    for row in (
        "1 at a time, per-trial result files (before)",
        "1 at a time (now, the default)",
        "2 at a time",
    ):
        assert f"| Ray Tune + Optuna, {row} | 6 |" in out
    assert "without the per-trial result files a search takes " in out
