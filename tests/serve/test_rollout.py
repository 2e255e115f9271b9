"""A new build rolled out under load (``serve.rollout``): no failed or degraded answer, none from a mix of
builds (each answer names one, and a branch replica refuses another build's requests), every answer after
the rollout from the new build and equal to the offline fusion of the new build's config, and the old
build's branch applications gone."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import FUSION, WEIGHTS, Load, app_args, http, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
APP = "roll"


def test_a_rollout_under_load_fails_nothing_and_never_mixes_builds(serve_url, serve_artifacts, tmp_path):
    from ray import serve

    from actors.fusion_file import FusionFile
    from actors.rerank import FusionConfig, fuse
    from actors.retrieval_query import RetrievalWeights
    from data_prep.corpus import Corpus
    from tune.branches_store import load_or_compute

    corpus = Corpus.load(serve_artifacts)
    b = load_or_compute(serve_artifacts, corpus, "test", "ease", RetrievalWeights(**WEIGHTS))
    rows = np.random.default_rng(1).choice(len(b.users), 12, replace=False)

    def offline(config: dict) -> dict[str, tuple[list[str], list[float]]]:
        """Known users' test-stage top-10 (ids, scores) under ``config``: what the evaluation computes."""
        fused = fuse(b.cf, b.retrieval, b.history_len, FusionConfig(**config), 10, b.unseen)
        return {str(corpus.user_ids[b.users[r]]): (corpus.item_ids[fused.ids[r]].tolist(), fused.scores[r].tolist())
                for r in rows}  # fmt: skip

    from serve.rollout import rollout

    fusion = FusionFile.load(serve_artifacts.root / "serve_fusion.json")
    other = tmp_path / "fusion-b.json"
    config_b = FUSION | {"method": "fixed", "alpha": 0.5}
    fusion.model_copy(update={"config": FusionConfig(**config_b)}).save(other)
    two = {"RerankDeployment": {"num_replicas": 2, "max_ongoing_requests": 4}}
    build_a = app_args(serve_artifacts, deployments=two, timeouts={"cf": 10.0, "retrieval": 10.0})
    build_b = build_a | {"fusion_path": str(other)}

    first = rollout(build_a, APP, f"/{APP}")
    wait_ready(f"/{APP}")
    try:
        version_a = http("GET", f"/{APP}/healthz")[1]["version"]
        assert first["from"] is None and first["to"] == version_a
        with Load(f"/{APP}", clients=2) as load:
            done = rollout(build_b, APP, f"/{APP}")
        assert done["from"] == version_a and done["to"] != version_a
        assert load.failed == 0 and load.retried == 0, (load.errors, load.retried_errors)
        assert load.ok > 0
        want = offline(config_b)
        answers = {u: http("POST", f"/{APP}/recommend", {"user_id": u, "k": 10})[1] for u in want}
        assert {a["version"] for a in answers.values()} == {done["to"]}
        assert all(a["degraded"] == [] for a in answers.values())
        for user, out in answers.items():  # the new build answers as its config does offline
            assert [i["item_id"] for i in out["items"]] == want[user][0], user
            assert [i["score"] for i in out["items"]] == pytest.approx(want[user][1], abs=1e-4), user
        assert len(done["removed"]) == 2 and all(version_a in a for a in done["removed"])
        assert not [a for a in serve.status().applications if version_a in a]  # old branches deleted
    finally:
        for name in [a for a in serve.status().applications if a == APP or a.startswith(f"{APP}-")]:
            serve.delete(name)
