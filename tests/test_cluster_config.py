"""cluster.yaml passes Ray's own autoscaler schema, offline (``ray up`` has no dry run)."""

from __future__ import annotations

from pathlib import Path

import yaml


def test_cluster_yaml_is_valid_for_ray_up():
    # `ray up` has no dry run and no public validator: these are the two functions it calls first
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parent.parent / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert {"head", "gpu_worker", "cpu_worker"} <= set(config["available_node_types"])
    assert any('".[gpu]"' in c for c in config["setup_commands"])
