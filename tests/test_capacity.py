"""The capacity model of the README's "Sizing a cluster": known answers, and its CLI's errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def capacity():
    spec = importlib.util.spec_from_file_location("capacity", ROOT / "scripts" / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plan_known_answers():
    c = capacity()
    rates = c.Rates(completion_tokens_per_item=20.0, completion_tokens_per_query=10.0, gpu_tokens_per_s=1000.0,
                    pipeline_efficiency=0.5, ms_per_request={"CFDeployment": 30.0, "RerankDeployment": 5.0},
                    utilisation=0.5)  # fmt: skip
    out = c.plan(c.Workload(items=360_000, users=36_000, gpus=2, rps=100.0, queries_per_user=2,
                            events_per_s=40.0), rates)  # fmt: skip
    # 360k items x 20 tokens / (2 GPUs x 1000 tok/s x 0.5) = 7,200 s
    assert out["enrichment_hours"] == pytest.approx(2.0) and out["enrichment_tokens"] == 7_200_000
    assert out["query_hours"] == pytest.approx(0.2)  # 36k x 2 x 10 tokens / (2 x 1000 x 0.5) = 720 s
    # 100 req/s x 30 ms / 0.5 busy = 6 replicas; x 5 ms = 1; 40 changed histories/s x 10 tokens / (1000 x 0.5)
    assert out["replicas"] == {"CFDeployment": 6, "RerankDeployment": 1} and out["query_gpus_online"] == 1


def test_cli_prints_the_plan_and_rejects_bad_sizes(capsys):
    c = capacity()
    assert c.main(["--items", "1000000", "--users", "100000", "--gpus", "8", "--rps", "200"]) == 0
    out = capsys.readouterr().out
    assert "| enrichment | 1,000,000 items" in out and "| CFDeployment |" in out
    assert c.main(["--items", "0", "--users", "10"]) == 2
    assert "every size must be positive" in capsys.readouterr().err
