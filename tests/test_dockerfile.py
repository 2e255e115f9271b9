"""The Dockerfile the KubeRay manifest names: hadolint finds nothing, and it runs the Ray version the project
pins (it cannot be built here: no Docker, no GPU)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    res = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_image_the_cluster_runs_matches_the_pins():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)-py311-gpu$", text, re.M)
    assert base, "FROM must be Ray's GPU image for Python 3.11"
    manifest = yaml.safe_load((ROOT / "serve" / "rayservice.yaml").read_text())
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == base.group(1)
    import ray

    assert ray.__version__ == base.group(1)  # the version the tests ran with
    assert '".[gpu]"' in text and "q2rec models" in text  # the GPU extra and the packaged models
    assert "serve_config.cluster.yaml" in text
