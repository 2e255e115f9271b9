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
