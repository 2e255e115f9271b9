"""The online state every ingress replica shares: items appended to users' histories by events, and the
queries the LLM wrote online. One small interface, three backends:

- ``sqlite`` (default): one file under the artifacts directory in WAL mode. Every process on the host
  (each ingress replica, on every Ray node of one machine) reads and writes it safely, and it survives a
  replica, app or node restart.
- ``redis``: the online store of a cluster, at a ``redis://`` URL from the config or ``$Q2REC_REDIS_URL``.
- ``memory``: a dict in each replica, as before there was a store; nothing is shared or kept. For tests
  and as the baseline of ``bench/serve_latency.py``.

The base histories (train + validation) stay in each replica's ``ServingState``: they are the same
everywhere and read-only. The store holds only what arrived online, as item ids, in arrival order.
Every backend failure is a ``StoreUnavailable`` that names the store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from serve.config import StoreSettings

REDIS_URL_ENV = "Q2REC_REDIS_URL"
Query = tuple[tuple[str, ...], str]  # (the query texts: the query and its extra samples, source)


def _texts(stored: str) -> tuple[str, ...]:
    """Query texts as stored: a JSON list (a plain string from before several queries per user)."""
    try:
        value = json.loads(stored)
    except json.JSONDecodeError:
        return (stored,)
    return tuple(str(t) for t in value) if isinstance(value, list) else (stored,)


class StoreUnavailable(RuntimeError):
    """The online store did not answer; ``store`` names it."""

    def __init__(self, store: str, cause: BaseException) -> None:
        super().__init__(f"online store {store} unavailable: {type(cause).__name__}: {cause}")
        self.store = store


class OnlineStore(ABC):
    """Appended events per user and online-written queries by history key."""

    name: str  # what errors and /healthz call it

    @abstractmethod
    async def append(self, user_id: str, item_ids: list[str]) -> list[str]:
        """Append atomically; the user's appended items up to and including these (later appends from
        other clients are not in it), so the caller knows the history exactly before and after."""

    @abstractmethod
    async def appended(self, user_id: str) -> list[str]:
        """Every item appended for the user, in arrival order (empty for none)."""

    @abstractmethod
    async def get_query(self, key: str) -> Query | None: ...

    @abstractmethod
    async def put_query(self, key: str, query: Query) -> None: ...

    @abstractmethod
    async def pop_query(self, key: str) -> bool:
        """Remove a query; whether there was one."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    def close(self) -> None:  # noqa: B027 - optional for backends without connections
        pass


class MemoryStore(OnlineStore):
    def __init__(self, query_capacity: int = 200_000) -> None:
        self.name = "memory"
        self.events: dict[str, list[str]] = {}
        self.queries: OrderedDict[str, Query] = OrderedDict()
        self.capacity = query_capacity

    async def append(self, user_id: str, item_ids: list[str]) -> list[str]:
        seq = self.events.setdefault(user_id, [])
        seq.extend(item_ids)
        return list(seq)

    async def appended(self, user_id: str) -> list[str]:
        return list(self.events.get(user_id, ()))

    async def get_query(self, key: str) -> Query | None:
        return self.queries.get(key)

    async def put_query(self, key: str, query: Query) -> None:
        self.queries[key] = query
        self.queries.move_to_end(key)
        while len(self.queries) > self.capacity:
            self.queries.popitem(last=False)

    async def pop_query(self, key: str) -> bool:
        return self.queries.pop(key, None) is not None

    async def ping(self) -> None:
        pass


class SQLiteStore(OnlineStore):
    """One SQLite file in WAL mode: readers never wait for a writer, writers wait up to ``timeout_s``.
    Calls are short and run on the caller's thread (no thread hop on the request path)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
                                       item_id TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
    CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, text TEXT NOT NULL, source TEXT NOT NULL,
                                        at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS queries_at ON queries (at);
    """

    def __init__(self, path: str | Path, timeout_s: float = 2.0, query_capacity: int = 200_000) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self.timeout_s = timeout_s
        self.capacity = query_capacity
        self.puts = 0
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None,
                                 check_same_thread=False)  # fmt: skip
            for attempt in range(20):  # processes opening a new file at once race for the WAL switch
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(self.SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 19:
                        db.close()
                        raise
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
            self._db = db
        return self._db

    def _run(self, fn):
        try:
            return fn(self._conn())
        except (sqlite3.Error, OSError) as exc:
            self.close()  # reconnect on the next call: the file may be back
            raise StoreUnavailable(self.name, exc) from exc

    async def append(self, user_id: str, item_ids: list[str]) -> list[str]:
        def tx(db: sqlite3.Connection) -> list[str]:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                db.executemany("INSERT INTO events (user_id, item_id, at) VALUES (?, ?, ?)",
                               [(user_id, i, now) for i in item_ids])  # fmt: skip
                rows = db.execute("SELECT item_id FROM events WHERE user_id = ? ORDER BY seq", (user_id,))
                out = [r[0] for r in rows]
                db.execute("COMMIT")
                return out
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return self._run(tx)

    async def appended(self, user_id: str) -> list[str]:
        q = "SELECT item_id FROM events WHERE user_id = ? ORDER BY seq"
        return self._run(lambda db: [r[0] for r in db.execute(q, (user_id,))])

    async def get_query(self, key: str) -> Query | None:
        row = self._run(
            lambda db: db.execute("SELECT text, source FROM queries WHERE key = ?", (key,)).fetchone()
        )
        return (_texts(row[0]), row[1]) if row else None

    async def put_query(self, key: str, query: Query) -> None:
        self.puts += 1
        trim = self.puts % 1000 == 0

        def tx(db: sqlite3.Connection) -> None:
            texts, source = query
            db.execute("INSERT OR REPLACE INTO queries VALUES (?, ?, ?, ?)",
                       (key, json.dumps(list(texts)), source, time.time()))  # fmt: skip
            if trim:  # now and then, keep the newest ``capacity`` queries (by the index on ``at``)
                row = db.execute("SELECT at FROM queries ORDER BY at DESC LIMIT 1 OFFSET ?", (self.capacity,))
                cut = row.fetchone()
                if cut is not None:
                    db.execute("DELETE FROM queries WHERE at <= ?", cut)

        self._run(tx)

    async def pop_query(self, key: str) -> bool:
        return self._run(lambda db: db.execute("DELETE FROM queries WHERE key = ?", (key,)).rowcount > 0)

    async def ping(self) -> None:
        self._run(lambda db: db.execute("SELECT 1 FROM events LIMIT 1").fetchall())  # reads the file

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


class RedisStore(OnlineStore):
    """Redis through its asyncio client: events are one list per user (``RPUSH`` is atomic), queries are
    strings with a time to live. Keys start with ``q2rec:<namespace>:``, so datasets can share a server."""

    def __init__(
        self, url: str, namespace: str, timeout_s: float = 0.5, query_ttl_s: int = 30 * 86400
    ) -> None:
        self.url = url
        u = urlsplit(url)
        self.name = f"{u.scheme}://{u.hostname}:{u.port or 6379}{u.path}"  # never a password
        self.prefix = f"q2rec:{namespace}:"
        self.timeout_s = timeout_s
        self.ttl = query_ttl_s
        self._client = None

    def _redis(self):
        if self._client is None:  # made on first use, on the event loop that uses it
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                decode_responses=True, retry_on_timeout=False,
            )  # fmt: skip
        return self._client

    async def _run(self, coro_fn):
        import redis.exceptions

        try:
            return await coro_fn(self._redis())
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(self.name, exc) from exc

    def _events(self, user_id: str) -> str:
        return f"{self.prefix}events:{user_id}"

    def _query(self, key: str) -> str:
        return f"{self.prefix}query:{key}"

    async def append(self, user_id: str, item_ids: list[str]) -> list[str]:
        async def tx(r) -> list[str]:
            async with r.pipeline(transaction=True) as p:  # MULTI/EXEC: nothing lands between the two
                p.rpush(self._events(user_id), *item_ids)
                p.lrange(self._events(user_id), 0, -1)
                _, items = await p.execute()
            return list(items)

        return await self._run(tx)

    async def appended(self, user_id: str) -> list[str]:
        return await self._run(lambda r: r.lrange(self._events(user_id), 0, -1))

    async def get_query(self, key: str) -> Query | None:
        raw = await self._run(lambda r: r.get(self._query(key)))
        if not raw:
            return None
        texts, source = json.loads(raw)
        return (tuple(texts) if isinstance(texts, list) else (texts,), source)

    async def put_query(self, key: str, query: Query) -> None:
        texts, source = query
        await self._run(lambda r: r.set(self._query(key), json.dumps([list(texts), source]), ex=self.ttl))

    async def pop_query(self, key: str) -> bool:
        return bool(await self._run(lambda r: r.delete(self._query(key))))

    async def ping(self) -> None:
        await self._run(lambda r: r.ping())


def open_store(settings: StoreSettings, artifacts: Path, query_capacity: int) -> OnlineStore:
    """The store ``settings`` names, for the artifacts at ``artifacts``."""
    if settings.backend == "memory":
        return MemoryStore(query_capacity)
    if settings.backend == "sqlite":
        path = Path(settings.path) if settings.path else artifacts / "online" / "state.sqlite3"
        return SQLiteStore(path, settings.timeout_s, query_capacity)
    url = settings.url or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ValueError(f"store.url: the redis backend needs a redis:// URL (or ${REDIS_URL_ENV}), got none")
    return RedisStore(
        url, settings.namespace or artifacts.resolve().name, settings.timeout_s, settings.query_ttl_s
    )
