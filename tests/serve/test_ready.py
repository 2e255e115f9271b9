"""Ready means warm: once the app answers, both branches answer within their budgets."""

from __future__ import annotations

import os
import threading
import time

import pytest

from .conftest import app_args, http

pytestmark = [pytest.mark.ray]


def test_the_first_request_after_ready_is_not_degraded(serve_url, serve_artifacts):
    from ray import serve

    from serve.app import build_app

    warmup = float(os.environ.get("Q2REC_TEST_WARMUP", "300"))  # 0 shows what happens without the wait
    app = build_app(app_args(serve_artifacts, timeouts={"warmup": warmup}))
    # deployed in the background while the test polls like a client: the first 200 is "ready"
    deploying = threading.Thread(target=serve.run, args=(app,), kwargs={"name": "warm", "route_prefix": "/warm"},
                                 daemon=True)  # fmt: skip
    deploying.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                status, health = http("GET", "/warm/healthz", timeout=5)
            except OSError:
                status, health = None, None
            if status == 200:
                break
            assert time.monotonic() < deadline, f"/warm/healthz never answered 200 (last: {status})"
            time.sleep(0.2)
        # a new history: its query is built from metadata, encoded, searched and scored by CF right now
        status, out = http("POST", "/warm/recommend", {"history": ["50", "181", "172"], "k": 10})
        assert status == 200 and out["degraded"] == [], out
        assert health["status"] == "ok" and all(b["answering"] for b in health["branches"].values()), health
    finally:
        deploying.join(timeout=300)
        serve.delete("warm")
