"""Catalog enrichment as a cluster user runs it (a driver joining the cluster through ``RAY_ADDRESS``),
its vLLM-on-CPU engines spread over both nodes, the worker node removed hard while the job runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITEMS = 192
BATCH = 16


def engine_nodes() -> dict[str, str]:
    """One reading of the GCS: actor id → node id of the ALIVE Ray Data workers running the enrichment UDF."""
    import ray._private.state as state  # the GCS's actor table: the state API needs the dashboard

    return {
        aid: a["Address"]["NodeID"]
        for aid, a in state.actors().items()
        if a["State"] == "ALIVE" and "EnrichBatch" in a["ActorClassName"]
    }


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def test_engines_spread_and_a_lost_node_loses_no_item(two_nodes, tmp_path):
    from data_prep.artifacts import ArtifactPaths
    from data_prep.prepare import PrepareConfig, prepare

    paths: ArtifactPaths = prepare(PrepareConfig("ml-100k"), tmp_path)
    cmd = [sys.executable, "-m", "q2rec", "enrich", "--dataset", "ml-100k", "--artifacts", str(tmp_path),
           "--engine", "vllm", "--limit", str(ITEMS), "--batch-size", str(BATCH), "--replicas", "2"]  # fmt: skip
    env = os.environ | {"RAY_ADDRESS": two_nodes.cluster.address}
    log = tmp_path / "enrich.log"
    head, worker = two_nodes.head.node_id, two_nodes.worker.node_id
    t0 = time.monotonic()
    removed = False
    with open(log, "w") as out:
        job = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            seen: set[str] = set()
            while time.monotonic() - t0 < 240 and job.poll() is None:  # both engines up, one part written
                seen |= set(engine_nodes().values())
                if seen == {head, worker} and digest(paths.enrich_parts):
                    break
                time.sleep(0.5)
            assert seen == {head, worker}, (
                f"engines ran on {seen}, not on both nodes; log: {log.read_text()[-2000:]}"
            )
            written = digest(paths.enrich_parts)
            assert written and job.poll() is None, "the job ended before the node could be removed"
            t_lost = time.monotonic()
            two_nodes.cluster.remove_node(two_nodes.worker, allow_graceful=False)
            removed = True
            rc = job.wait(timeout=600)
            t_end = time.monotonic()
        finally:
            if job.poll() is None:
                job.kill()
            if removed:
                two_nodes.add_worker()  # the next test gets its two nodes back
    text = log.read_text()
    if rc != 0:  # the documented alternative: a clear error, then a rerun resumes
        assert "rerun" in text.lower(), text[-3000:]
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    out = pd.read_parquet(paths.items_enriched)
    print(f"\nenrichment with the worker node lost {t_lost - t0:.0f} s in, {len(written)} part(s) written then: "
          f"exit {rc} {t_end - t_lost:.0f} s after the loss ({'finished on the head' if rc == 0 else 'rerun'}); "
          f"{len(out)} rows, {out['item_id'].nunique()} unique, sources {out['source'].value_counts().to_dict()}")  # fmt: skip
    items = pd.read_parquet(paths.items)["item_id"].head(ITEMS)
    assert len(out) == out["item_id"].nunique() == ITEMS
    assert set(out["item_id"]) == set(items)
    after = digest(paths.enrich_parts)
    assert {k: after.get(k) for k in written} == written, "a part written before the loss was changed"
