"""Ray started by q2rec needs its token: a process that reaches the cluster without it is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray]
JOIN = (
    "import ray; ray.init(address={!r}, log_to_driver=False); print('joined', ray.cluster_resources()['CPU'])"
)


def join(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", JOIN.format(address)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_session_cluster_refuses_a_driver_without_its_token(ray_cluster):
    assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) >= 32
    address = ray_cluster.get_runtime_context().gcs_address
    without = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    refused = join(address, without)
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused.stderr[-2000:]
    wrong = join(address, os.environ | {"RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode != 0, wrong.stdout
    joined = join(address, dict(os.environ))
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]


def test_a_token_is_made_only_for_a_cluster_started_here(monkeypatch):
    from runtime.ray_cluster import apply_safe_env

    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    apply_safe_env()
    first = os.environ["RAY_AUTH_TOKEN"]
    apply_safe_env()
    assert os.environ["RAY_AUTH_TOKEN"] == first  # kept: every process started from here shares it
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    apply_safe_env()
    assert "RAY_AUTH_TOKEN" not in os.environ  # joining a cluster: its own token, from the environment
