"""Shared fixtures: one Ray cluster per test session, and the packaged ML-100K prepared once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.ray_cluster import apply_safe_env

apply_safe_env()
os.environ["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "180"  # a hang fails; a slow engine start does not


# what a test needs, from the fixtures it uses: ``make test-fast`` runs the tests that need none of these
NEEDS = {
    "ray": {"ray_cluster", "ml100k_content"},  # the session's Ray cluster (the content indexes on Ray Data)
    "llm": {"llm_dir", "reranker"},  # an LLM engine on the packaged model
    "browser": {"browser"},  # headless Chromium
}


def pytest_collection_modifyitems(config, items):
    """Each test gets the markers of what it needs (``NEEDS``). The multi-node tests (``tests/cluster``) run
    first: their cluster starts and stops before the session's one-node Ray does, since a process joins one
    Ray cluster at a time."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for mark, fixtures in NEEDS.items():
            if used & fixtures:
                item.add_marker(mark)
    items.sort(key=lambda item: 0 if item.path.parent.name == "cluster" else 1)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by every test that needs one."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture
def csv_folder(tmp_path):
    """Write a small dataset in the generic CSV format: ``csv_folder(name, users, items, per_user, stride,
    titles)`` -> the folder. User ``u`` has ``per_user`` events on items ``(u * stride + j) % items``, in
    order; item ``i``'s title is ``titles[i % len(titles)]`` and its number."""

    def write(name: str, users: int, items: int, per_user: int, stride: int = 1,
              titles: tuple[str, ...] = ("Item",)) -> Path:  # fmt: skip
        folder = tmp_path / name
        folder.mkdir()
        rows = ["user_id,item_id,timestamp"]
        for u in range(users):
            rows += [f"u{u},i{(u * stride + j) % items},{1000 * u + j}" for j in range(per_user)]
        (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
        named = "".join(f"i{i},{titles[i % len(titles)]} {i}\n" for i in range(items))
        (folder / "items.csv").write_text("item_id,title\n" + named)
        return folder

    return write


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


@pytest.fixture(scope="session")
def ml100k_content(ml100k):
    """Retrieval inputs on ML-100K without running the LLM: metadata-built descriptions and queries
    (the LLM paths have their own tests), both FAISS indexes and ``user_queries.parquet``."""
    import pandas as pd

    from actors.encoder import EncoderConfig
    from actors.prompts import ItemRecord, fallback_description
    from actors.retriever import IndexConfig
    from actors.user_query import UserQueryWriter
    from data_prep.corpus import Corpus
    from data_prep.index import build_variant
    from data_prep.queries import COLUMNS, CatalogView, query_requests

    enriched = ml100k.items_enriched
    if not enriched.is_file():
        items = pd.read_parquet(ml100k.items)
        desc = [fallback_description(ItemRecord.from_mapping(r)) for r in items.to_dict("records")]
        pd.DataFrame({"item_id": items["item_id"], "description": desc, "source": "fallback"}).to_parquet(
            enriched
        )
    for variant in ("metadata", "description"):
        build_variant(ml100k, variant, IndexConfig(), EncoderConfig())
    # always rewritten: a query test may have left a partial file
    qpath = ml100k.user_queries
    requests = query_requests(Corpus.load(ml100k))
    catalog = CatalogView(str(ml100k.root))
    written = UserQueryWriter(None).write([catalog.history(h) for h in requests["history"]])
    queries = requests[["user_id", "stage", "key"]].assign(
        query=[q.text for q in written], source="fallback", attempts=0, prompt_tokens=0,
        completion_tokens=0, rejected="", queries=[q.texts for q in written])  # fmt: skip
    queries[COLUMNS].to_parquet(qpath, index=False)
    return ml100k


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free port of 127.0.0.1 (installed by ``make setup``), stopped at the end."""
    from devtools.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
