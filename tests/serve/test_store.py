"""The online store's contract, run against every backend: the real SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import pytest

from devtools.redis_server import RedisServer
from serve.store import (
    Appended,
    CatalogChange,
    ItemsExist,
    MemoryStore,
    OnlineStore,
    RedisStore,
    SQLiteStore,
    StoreUnavailable,
)


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
        assert (await store.append("u1", ["10", "11"])).items == ["10", "11"]
        assert (await store.append("u2", ["7"])).items == ["7"]
        done = await store.append("u1", ["12"])
        assert done == Appended(["10", "11", "12"], count=1, before=2, kept=3)
        assert await store.appended("u1") == ["10", "11", "12"]
        assert await store.appended("u2") == ["7"]

    run(go())


def test_a_repeated_event_id_is_stored_once_and_answered_as_the_first_time(store):
    async def go():
        first = await store.append("u1", ["10", "11"], event_id="e-1")
        assert first == Appended(["10", "11"], count=2, before=0, kept=2)
        again = await store.append("u1", ["10", "11"], event_id="e-1")
        assert again == Appended([], count=2, before=0, kept=2, duplicate=True)
        assert (await store.append("u2", ["5"], event_id="e-1")).items == ["5"]  # ids are per user
        assert (await store.append("u1", ["12"], event_id="e-2")).items == ["10", "11", "12"]
        assert (await store.append("u1", ["12"])).items == ["10", "11", "12", "12"]  # no id: stored again
        assert await store.appended("u1") == ["10", "11", "12", "12"]

    run(go())


def test_concurrent_repeats_store_once(store):
    """Eight clients send the same batch at once (a retry storm): one stores it, seven are told so."""

    async def go():
        done = await asyncio.gather(*(store.append("u", ["1", "2"], event_id="same") for _ in range(8)))
        assert sorted(d.duplicate for d in done) == [False] + [True] * 7
        assert {(d.count, d.before, d.kept) for d in done} == {(2, 0, 2)}
        assert await store.appended("u") == ["1", "2"]

    run(go())


def test_repeats_are_forgotten_after_the_retention_window(store):
    store.event_id_ttl_s = 1

    async def go():
        await store.append("u", ["1"], event_id="e")
        await asyncio.sleep(2.1)  # redis expires a key on whole seconds
        assert not (await store.append("u", ["1"], event_id="e")).duplicate

    run(go())


def test_a_users_stored_history_keeps_the_newest_items(store):
    store.max_events = 5

    async def go():
        await store.append("u", ["1", "2", "3"])
        done = await store.append("u", ["4", "5", "6", "7"])
        # the answer holds the history before the cap, so the caller knows it before and after the batch
        assert done == Appended(["1", "2", "3", "4", "5", "6", "7"], count=4, before=3, kept=5, dropped=2)
        assert await store.appended("u") == ["3", "4", "5", "6", "7"]
        assert (await store.append("u", ["8"])).dropped == 1
        assert await store.appended("u") == ["4", "5", "6", "7", "8"]

    run(go())


def test_sqlite_calls_never_block_the_event_loop(tmp_path):
    """A writer holding the file's lock makes an append wait; the caller's event loop keeps running."""
    import sqlite3

    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path, timeout_s=1.0)
    run(store.ping())  # creates the file
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")

    async def go() -> int:
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.append("u", ["1"])  # waits for the lock for timeout_s, then gives up
        task.cancel()
        return ticks

    try:
        ticks = run(go())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert ticks >= 10  # a blocked loop would not have ticked once during the second of waiting
    assert (run(store.append("u", ["1"]))).items == ["1"]


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


def test_the_catalog_log_keeps_additions_and_withdrawals_in_order_and_each_id_once(store):
    async def go():
        assert await store.catalog_head() == 0 and await store.catalog_changes(0) == []
        rows = [{"item_id": "n1", "title": "New One", "year": 2026}, {"item_id": "n2", "title": "New Two"}]
        assert await store.add_items(rows) == 2
        assert await store.hide_item("n1") == 3
        with pytest.raises(ItemsExist) as err:  # one id taken: nothing of the batch is added
            await store.add_items([{"item_id": "n3", "title": "Three"}, {"item_id": "n2", "title": "Again"}])
        assert err.value.ids == ["n2"]
        assert await store.catalog_head() == 3
        assert await store.catalog_changes(0) == [
            CatalogChange(1, "add", "n1", rows[0]), CatalogChange(2, "add", "n2", rows[1]),
            CatalogChange(3, "hide", "n1"),
        ]  # fmt: skip
        assert [c.seq for c in await store.catalog_changes(2)] == [3]
        assert await store.catalog_changes(3) == []
        described = {"n2": {"description": "space, robots", "source": "llm"}}
        assert await store.describe_items(described) == 4
        assert await store.catalog_changes(3) == [CatalogChange(4, "describe", "n2", described["n2"])]

    run(go())


def test_concurrent_additions_of_one_id_keep_one(tmp_path):
    """Replicas adding the same item at once, each with its own connection: the log holds it once."""

    async def go():
        stores = [SQLiteStore(tmp_path / "state.sqlite3") for _ in range(4)]
        got = await asyncio.gather(*(s.add_items([{"item_id": "x", "title": "X"}]) for s in stores),
                                   return_exceptions=True)  # fmt: skip
        assert sum(isinstance(g, ItemsExist) for g in got) == 3 and got.count(1) == 1, got
        assert [c.item_id for c in await stores[0].catalog_changes(0)] == ["x"]

    run(go())


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
    with pytest.raises(StoreUnavailable) as err:
        run(store.appended("u"))
    # named by its file, never by a path (the message can reach an HTTP client)
    assert str(err.value).startswith("online store sqlite:state.sqlite3 unavailable")
    assert str(tmp_path) not in str(err.value)


def test_open_store_needs_a_redis_url(tmp_path, monkeypatch):
    from serve.config import StoreSettings
    from serve.store import REDIS_URL_ENV, open_store

    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    with pytest.raises(ValueError, match=r"store.url: the redis backend needs a redis:// URL"):
        open_store(StoreSettings(backend="redis"), tmp_path, 10)
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:1/0")
    s = open_store(StoreSettings(backend="redis"), tmp_path / "ml-100k", 10)
    assert (s.name, s.prefix) == ("redis://127.0.0.1:1/0", "q2rec:ml-100k:")
    sqlite = open_store(StoreSettings(), tmp_path, 10)
    assert sqlite.name == "sqlite:state.sqlite3" and sqlite.path == tmp_path / "online" / "state.sqlite3"
