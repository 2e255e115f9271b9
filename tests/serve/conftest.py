"""One Serve instance per session on the session Ray cluster; apps are added under their own route prefix.

The main app serves the packaged ML-100K with EASE, metadata-built queries (``engine: none``) and a
fusion.json written here; tests that need the LLM, faults or two replicas deploy their own app beside it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from typing import Any

import pytest

PORT = 8127
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token"
FUSION = {"method": "adaptive", "norm": "zscore", "n": 100, "a": 0.4, "b": 0.5, "c": 1.0}


def http(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
         timeout: float = 30.0) -> tuple[int, Any]:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            return e.code, json.loads(payload or b"null")
        except json.JSONDecodeError:
            return e.code, payload.decode(errors="replace")


def app_args(paths, **overrides) -> dict[str, Any]:
    return {
        "artifacts": str(paths.root),
        "cf_model": "ease",
        "fusion_path": str(paths.root / "serve_fusion.json"),
        "engine": {"backend": "none"},
    } | overrides


def wait_ready(prefix: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http("GET", f"{prefix}/healthz", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{prefix}/healthz not ready after {timeout}s")


@pytest.fixture(scope="session")
def serve_artifacts(ray_cluster, ml100k_content):
    from actors.rerank import FusionConfig
    from data_prep.artifacts import write_json
    from data_prep.train import train

    train(ml100k_content, "ease", show_progress=False)
    config = asdict(FusionConfig(**FUSION))
    write_json(ml100k_content.root / "serve_fusion.json",
               {"config": config, "cf": "ease", "retrieval": "llm+lastitem", "variant": "enriched",
                "valid": {"NDCG@10": 0.0}})  # fmt: skip
    return ml100k_content


@pytest.fixture(scope="session")
def serve_url(serve_artifacts):
    """The main app at ``/``: EASE + retrieval over the enriched index, events behind a token."""
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(app_args(serve_artifacts, events_token=TOKEN)), name="q2rec", route_prefix="/")
    wait_ready("")
    yield BASE
    serve.shutdown()
