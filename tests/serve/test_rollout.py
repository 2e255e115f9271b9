"""A new build rolled out under load (``serve.rollout``): no failed or degraded answer, none from a mix of
builds (each answer names one, and a branch replica refuses another build's requests), every answer after
the rollout from the new build, and the old build's branch applications gone. An item added online before
the rollout is recommended by the new build's branches, which read the catalog log before they are ready."""

from __future__ import annotations

import json

import pytest

from .conftest import Load, app_args, http, wait_ready
from .test_online_items import NEW, SCIFI

pytestmark = [pytest.mark.ray, pytest.mark.slow]
APP = "roll"


def test_a_rollout_under_load_fails_nothing_and_never_mixes_builds(serve_url, serve_artifacts, tmp_path):
    from ray import serve

    from serve.rollout import rollout

    fusion = json.loads((serve_artifacts.root / "serve_fusion.json").read_text())
    other = tmp_path / "fusion-b.json"
    other.write_text(json.dumps(fusion | {"config": fusion["config"] | {"method": "fixed", "alpha": 0.5}}))
    two = {"RerankDeployment": {"num_replicas": 2, "max_ongoing_requests": 4}}
    build_a = app_args(serve_artifacts, deployments=two, timeouts={"cf": 10.0, "retrieval": 10.0})
    build_b = build_a | {"fusion_path": str(other)}

    first = rollout(build_a, APP, f"/{APP}")
    wait_ready(f"/{APP}")
    try:
        version_a = http("GET", f"/{APP}/healthz")[1]["version"]
        assert first["from"] is None and first["to"] == version_a
        # an item added online before the rollout: the new build's branches, started later, catch up
        assert http("POST", f"/{APP}/items", {"items": [NEW]})[0] == 200
        with Load(f"/{APP}", clients=2) as load:
            done = rollout(build_b, APP, f"/{APP}")
        assert done["from"] == version_a and done["to"] != version_a
        assert load.failed == 0 and load.retried == 0, (load.errors, load.retried_errors)
        assert load.ok > 0
        answers = [http("POST", f"/{APP}/recommend", {"user_id": str(u), "k": 10})[1] for u in range(1, 21)]
        assert {a["version"] for a in answers} == {done["to"]} and all(a["degraded"] == [] for a in answers)
        out = http("POST", f"/{APP}/recommend", {"history": SCIFI, "k": 10})[1]
        assert NEW["item_id"] in [i["item_id"] for i in out["items"]], out["items"]
        assert len(done["removed"]) == 2 and all(version_a in a for a in done["removed"])
        assert not [a for a in serve.status().applications if version_a in a]  # old branches deleted
    finally:
        for name in [a for a in serve.status().applications if a == APP or a.startswith(f"{APP}-")]:
            serve.delete(name)
