"""The online store's contract, run against every backend: the real SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import pytest

from serve.redis_server import RedisServer
from serve.store import MemoryStore, OnlineStore, RedisStore, SQLiteStore, StoreUnavailable


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> OnlineStore:
    if request.param == "memory":
        return MemoryStore(query_capacity=10)
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "online" / "state.sqlite3")
    return RedisStore(request.getfixturevalue("redis_server").url, namespace=uuid.uuid4().hex)


def test_events_append_in_order_and_return_everything_up_to_them(store):
    async def go():
        assert await store.appended("u1") == []
        assert await store.append("u1", ["10", "11"]) == ["10", "11"]
        assert await store.append("u2", ["7"]) == ["7"]
        assert await store.append("u1", ["12"]) == ["10", "11", "12"]
        assert await store.appended("u1") == ["10", "11", "12"]
        assert await store.appended("u2") == ["7"]

    run(go())


def test_queries_put_get_pop(store):
    async def go():
        assert await store.get_query("k") is None
        await store.put_query("k", (("a quiet drama", "slow family stories"), "llm"))
        assert await store.get_query("k") == (("a quiet drama", "slow family stories"), "llm")
        assert await store.pop_query("k") is True
        assert await store.pop_query("k") is False
        assert await store.get_query("k") is None
        await store.ping()

    run(go())


def _client(path: str, client: int, n: int) -> None:
    s = SQLiteStore(path)
    for j in range(n):
        asyncio.run(s.append("shared-user", [f"c{client}-{j}"]))


def test_sqlite_is_shared_by_processes_and_loses_nothing(tmp_path):
    """Four processes append to one user at once: every event is there once, each client's in its order."""
    path = str(tmp_path / "state.sqlite3")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_client, args=(path, c, 25)) for c in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    items = run(SQLiteStore(path).appended("shared-user"))
    assert len(items) == len(set(items)) == 100
    for c in range(4):
        assert [i for i in items if i.startswith(f"c{c}-")] == [f"c{c}-{j}" for j in range(25)]


def test_redis_concurrent_appends_lose_nothing(redis_server):
    ns = uuid.uuid4().hex

    async def client(c: int) -> None:
        s = RedisStore(redis_server.url, ns)  # a connection of its own, as another replica has
        for j in range(25):
            await s.append("shared-user", [f"c{c}-{j}"])

    async def go():
        await asyncio.gather(*(client(c) for c in range(4)))
        return await RedisStore(redis_server.url, ns).appended("shared-user")

    items = run(go())
    assert len(items) == len(set(items)) == 100
    for c in range(4):
        assert [i for i in items if i.startswith(f"c{c}-")] == [f"c{c}-{j}" for j in range(25)]


def test_redis_survives_a_server_kill_and_names_itself_while_down(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    store = RedisStore(server.url, "durable", timeout_s=0.5)

    async def before():
        await store.append("u", ["1", "2"])

    run(before())
    server.stop()  # SIGKILL
    store = RedisStore(server.url, "durable", timeout_s=0.5)
    with pytest.raises(
        StoreUnavailable, match=rf"online store redis://127.0.0.1:{server.port}/0 unavailable"
    ):
        run(store.appended("u"))
    server.start()
    try:
        assert run(RedisStore(server.url, "durable").appended("u")) == ["1", "2"]
    finally:
        server.stop()


def test_sqlite_unreachable_names_the_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    store = SQLiteStore(blocker / "state.sqlite3")
    with pytest.raises(StoreUnavailable, match=rf"online store sqlite:{blocker}/state.sqlite3 unavailable"):
        run(store.appended("u"))


def test_open_store_needs_a_redis_url(tmp_path, monkeypatch):
    from serve.config import StoreSettings
    from serve.store import REDIS_URL_ENV, open_store

    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    with pytest.raises(ValueError, match=r"store.url: the redis backend needs a redis:// URL"):
        open_store(StoreSettings(backend="redis"), tmp_path, 10)
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:1/0")
    s = open_store(StoreSettings(backend="redis"), tmp_path / "ml-100k", 10)
    assert (s.name, s.prefix) == ("redis://127.0.0.1:1/0", "q2rec:ml-100k:")
    assert open_store(StoreSettings(), tmp_path, 10).name == f"sqlite:{tmp_path}/online/state.sqlite3"
