"""Shared fixtures: one Ray cluster per test session, and the packaged ML-100K prepared once."""

from __future__ import annotations

import os

import pytest

from data_prep.ray_cluster import apply_safe_env

apply_safe_env()
os.environ["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "60"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by every test that needs one."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def ml100k(artifacts_root):
    """ArtifactPaths of the packaged ML-100K, prepared and split once per session."""
    from data_prep.prepare import PrepareConfig, prepare

    return prepare(PrepareConfig("ml-100k"), artifacts_root)


@pytest.fixture(scope="session")
def ml100k_corpus(ml100k):
    from data_prep.corpus import Corpus

    return Corpus.load(ml100k)
