"""A Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``, as Ray's own tests use): a
head and a worker, each its own raylet and object store, each with a custom resource (``head``, ``worker``)
so a test can place work on a chosen node. These tests run before the rest (``tests/conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

OBJECT_STORE = 200 * 1024 * 1024  # per node: this box has 24 GiB for everything


@dataclass
class TwoNodes:
    cluster: object  # ray.cluster_utils.Cluster
    head: object  # ray._private.node.Node
    worker: object

    def add_worker(self):
        """A fresh worker node (after one was removed); returns it."""
        self.worker = self.cluster.add_node(
            num_cpus=2, resources={"worker": 1}, object_store_memory=OBJECT_STORE
        )
        self.cluster.wait_for_nodes()
        return self.worker


@pytest.fixture(scope="package")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.fail(
            "Ray is already up in this process: the multi-node tests must run first (tests/conftest.py)"
        )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"head": 1}, "object_store_memory": OBJECT_STORE,
                        "include_dashboard": False},
    )  # fmt: skip
    worker = cluster.add_node(num_cpus=2, resources={"worker": 1}, object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield TwoNodes(cluster, cluster.head_node, worker)
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="package")
def cluster_artifacts(two_nodes, request):
    """The session's ML-100K artifacts, made on this cluster if this is their first use (asked for by name
    so that pytest sets up the cluster first: its indexes are built with Ray Data, which would otherwise
    start a one-node Ray of its own)."""
    from tests.serve.conftest import prepare_serve_artifacts

    return prepare_serve_artifacts(request.getfixturevalue("ml100k_content"))
