"""The enrichment pipeline on Ray Data, with the real packaged model: kill it halfway, rerun, and every item
comes out exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from actors.llm.engine import EngineConfig
from data_prep.artifacts import ArtifactPaths
from data_prep.enrich import EnrichJobConfig, read_parts, run_enrichment, training_reviews
from data_prep.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.slow

LIMIT, BATCH = 24, 4


def test_kill_halfway_then_resume_exactly_once(ray_cluster, tmp_path):
    paths = prepare(PrepareConfig("ml-100k"), tmp_path)
    from actors.llm.packaged import default_llm_dir

    default_llm_dir()  # converted before the child starts, so the kill lands mid-generation
    env = os.environ | {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "q2rec", "enrich", "--dataset", "ml-100k", "--artifacts", str(tmp_path),
           "--engine", "transformers", "--limit", str(LIMIT), "--batch-size", str(BATCH)]  # fmt: skip
    child = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(paths.enrich_parts.glob("part-*.parquet"))) < 2:
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    before = read_parts(paths)
    assert 2 * BATCH <= len(before) < LIMIT, "the kill should land halfway"
    assert not (paths.items_enriched).exists()

    cfg = EnrichJobConfig(engine=EngineConfig(backend="transformers"), batch_size=BATCH, limit=LIMIT)
    summary = run_enrichment(paths, cfg, progress=False)
    assert summary["skipped_already_done"] == len(before)
    assert summary["enriched_this_run"] == LIMIT - len(before)

    out = pd.read_parquet(paths.items_enriched)
    items = pd.read_parquet(paths.items).head(LIMIT)
    assert out["item_id"].tolist() == items["item_id"].tolist()  # all of them, once, in catalog order
    assert not read_parts(paths)["item_id"].duplicated().any()
    assert set(out["source"]) <= {"llm", "fallback"}
    assert out["description"].str.len().gt(0).all()
    assert summary["llm"] + summary["fallback"] == LIMIT
    assert summary["completion_tokens"] > 0
    # the earlier run's rows were kept as they were, not regenerated
    merged = out.set_index("item_id").loc[before["item_id"], "description"]
    assert merged.tolist() == before["description"].tolist()

    again = run_enrichment(paths, cfg, progress=False)  # nothing left to do
    assert again["enriched_this_run"] == 0 and again["items"] == LIMIT


def test_review_grounding_uses_training_interactions_only(tmp_path):
    paths = ArtifactPaths(tmp_path)
    keys = ["user_id", "item_id", "timestamp"]
    pd.DataFrame([("u", "a", 1), ("u", "b", 2)], columns=keys).to_parquet(paths.split("train"))
    pd.DataFrame([("u", "a", 1, "train review"), ("u", "b", 2, ""), ("u", "a", 3, "valid review")],
                 columns=[*keys, "review"]).to_parquet(paths.reviews)  # fmt: skip
    reviews = training_reviews(paths, max_reviews=3)
    assert reviews.to_dict() == {"a": ["train review"]}


def test_missing_items_file_is_a_clear_error(tmp_path):
    from data_prep.schema import DataError

    with pytest.raises(DataError, match="items.parquet: not found; run `q2rec prepare`"):
        run_enrichment(ArtifactPaths(tmp_path), EnrichJobConfig(), progress=False)
