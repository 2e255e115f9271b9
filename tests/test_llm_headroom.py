"""The simulated query source of ``bench/llm_headroom.py`` (a bench-only oracle, never a default), and a
small run of the bench itself so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from data_prep.corpus import Corpus

ROOT = Path(__file__).resolve().parents[1]


def bench():
    spec = importlib.util.spec_from_file_location("llm_headroom", ROOT / "bench" / "llm_headroom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_corpus() -> tuple[Corpus, pd.DataFrame]:
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "title": [f"T{i}" for i in range(6)],
                          "genres": [f"g{i}" for i in range(6)]})  # fmt: skip
    rows = [(f"u{u}", f"i{(u + t) % 6}", t) for u in range(40) for t in range(4)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    from data_prep.split import leave_one_out

    s = leave_one_out(df)
    return Corpus.from_frames(items, s.train, s.valid, s.test), items


def test_oracle_names_the_target_for_a_share_p_of_users_and_never_the_title():
    h = bench()
    corpus, items = tiny_corpus()
    for p in (0.0, 0.5, 1.0):
        q = h.oracle_queries(corpus, items, "genres", p, seed=1)
        assert len(q) == 80 and set(q["stage"]) == {"valid", "test"}
        for stage in ("valid", "test"):
            part = q[q.stage == stage]
            target = items["genres"].to_numpy()[corpus.target(stage)[corpus.eval_users(stage)]]
            oracle = (part["source"] == "oracle").to_numpy()
            assert (part["query"].to_numpy()[oracle] == target[oracle]).all()
            assert (part["query"].to_numpy()[~oracle] != target[~oracle]).all()  # another item's field
            assert not part["query"].isin(items["title"]).any()
        informed = q.groupby("user_id")["source"].nunique()
        assert (informed == 1).all()  # a user is informed at both stages or at neither
        share = (q["source"] == "oracle").mean()
        assert share == p if p in (0.0, 1.0) else 0.3 < share < 0.7
    with pytest.raises(ValueError, match="p must be in"):
        h.oracle_queries(corpus, items, "genres", 1.5)
    with pytest.raises(ValueError, match="'title'"):
        h.pick_field(items, "title")
    assert h.pick_field(items, "auto") == "genres"


@pytest.mark.slow
def test_headroom_bench_small_run(ray_cluster, ml100k_content, artifacts_root, capsys):
    from q2rec.cli import main as q2rec

    assert (
        q2rec(["train", "--dataset", "ml-100k", "--artifacts", str(artifacts_root), "--models", "ease"]) == 0
    )
    code = bench().main(["--artifacts", str(artifacts_root), "--cf", "ease", "--p", "1", "--trials", "16"])
    assert code == 0  # 16 trials: past the search's starting points
    out = json.loads((ml100k_content.root / "headroom" / "headroom.json").read_text())
    (row,) = out["rows"]
    assert row["p"] == 1.0 and row["field"] == "genres"
    # every user's query naming the target's genres: the selection turns the LLM part on, beyond noise
    assert row["selected_llm_weight"] > 0 and row["test_ndcg10"] > row["nollm_test_ndcg10"]
    assert row["ci95"][0] > 0
    assert "SIMULATION" in capsys.readouterr().out
    assert (ml100k_content.root / "headroom" / "headroom.png").stat().st_size > 10_000
