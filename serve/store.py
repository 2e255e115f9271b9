"""The online state every ingress replica shares: items appended to users' histories by events, and the
queries the LLM wrote online. One small interface, three backends:

- ``sqlite`` (default): one file under the artifacts directory in WAL mode. Every process on the host
  (each ingress replica, on every Ray node of one machine) reads and writes it safely, and it survives a
  replica, app or node restart.
- ``redis``: the online store of a cluster, at a ``redis://`` URL from the config or ``$Q2REC_REDIS_URL``.
- ``memory``: a dict in each replica, as before there was a store; nothing is shared or kept. For tests
  and as the baseline of ``bench/serve_latency.py``.

The base histories (train + validation) stay in each replica's ``ServingState``: they are the same
everywhere and read-only. The store holds only what arrived online, as item ids, in arrival order, at most
``max_events`` per user (the oldest are dropped, and the append says how many). A batch may carry the
client's ``event_id``: a repeat within ``event_id_ttl_s`` appends nothing and is answered as the first
was, atomically on every backend (one SQLite transaction, one Redis script), so concurrent repeats from
several replicas store once. Without an id a client's retry may store a batch twice.

The store also holds the catalog's online changes, as one log (``CatalogChange``): items added through
the API and items withdrawn, numbered 1, 2, ... in the order every replica applies them. An added id is
unique in the log (checked atomically with the append); a replica knows how far it has applied the log, and
``catalog_head`` tells it whether there is more.

Every backend failure is a ``StoreUnavailable`` that names the store (never a path).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from serve.config import StoreSettings

REDIS_URL_ENV = "Q2REC_REDIS_URL"
Query = tuple[tuple[str, ...], str]  # (the query texts: the query and its extra samples, source)
MAX_EVENTS = 1000  # online items kept per user (StoreSettings.max_events)
EVENT_ID_TTL_S = 86400  # how long an event id is remembered (StoreSettings.event_id_ttl_s)


@dataclass(frozen=True)
class Appended:
    """What one append did. ``items``: the user's online items up to and including this batch, before the
    cap dropped any (so the history just before the batch, ``items[:-count]``, and just after it,
    ``items[dropped:]``, are both exact while other clients post for the same user). A repeated
    ``event_id`` appends nothing: ``duplicate``, ``items`` empty, and the other fields as the first time."""

    items: list[str]
    count: int  # items in the batch
    before: int  # online items stored before the batch
    kept: int  # online items stored after it (after the cap)
    dropped: int = 0  # oldest items the cap removed
    duplicate: bool = False

    @classmethod
    def fresh(cls, items: list[str], count: int, cap: int) -> Appended:
        dropped = max(0, len(items) - cap)
        return cls(items, count, len(items) - count, len(items) - dropped, dropped)

    def record(self) -> str:
        """What is remembered under the event id (JSON)."""
        return json.dumps([self.count, self.before, self.kept])

    @classmethod
    def repeat(cls, record: str) -> Appended:
        count, before, kept = json.loads(record)
        return cls([], int(count), int(before), int(kept), 0, True)


@dataclass(frozen=True)
class CatalogChange:
    """One entry of the catalog log: ``add`` carries the new item's catalog row (``item_id``, ``title`` and
    the text fields the catalog has); ``hide`` withdraws ``item_id``; ``describe`` carries an added item's
    LLM-written description (``{"description", "source"}``), which lands after its ``add``."""

    seq: int  # 1-based position in the log
    op: str  # "add" | "hide" | "describe"
    item_id: str
    row: dict | None = None

    def record(self) -> str:
        return json.dumps([self.op, self.item_id, self.row])

    @classmethod
    def parse(cls, seq: int, record: str) -> CatalogChange:
        op, item_id, row = json.loads(record)
        return cls(int(seq), op, item_id, row)


class ItemsExist(ValueError):
    """Items added online before under these ids (the log keeps each added id once)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"item_id: already added online: {ids[:20]}")
        self.ids = ids


def _texts(stored: str) -> tuple[str, ...]:
    """Query texts as stored: a JSON list."""
    return tuple(str(t) for t in json.loads(stored))


class StoreUnavailable(RuntimeError):
    """The online store did not answer; ``store`` names it."""

    def __init__(self, store: str, cause: BaseException) -> None:
        # an OSError's text names the path: keep only its reason
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        super().__init__(f"online store {store} unavailable: {type(cause).__name__}: {why}")
        self.store = store


class OnlineStore(ABC):
    """Appended events per user and online-written queries by history key."""

    name: str  # what errors and /healthz call it
    max_events: int = MAX_EVENTS
    event_id_ttl_s: float = EVENT_ID_TTL_S

    @abstractmethod
    async def append(self, user_id: str, item_ids: list[str], event_id: str | None = None) -> Appended:
        """Append atomically, keeping the newest ``max_events``; a repeat of ``event_id`` (within
        ``event_id_ttl_s``) appends nothing. Later appends from other clients are not in the answer."""

    @abstractmethod
    async def appended(self, user_id: str) -> list[str]:
        """The user's stored online items, in arrival order (empty for none)."""

    @abstractmethod
    async def get_query(self, key: str) -> Query | None: ...

    @abstractmethod
    async def put_query(self, key: str, query: Query) -> None: ...

    @abstractmethod
    async def pop_query(self, key: str) -> bool:
        """Remove a query; whether there was one."""

    @abstractmethod
    async def add_items(self, rows: list[dict]) -> int:
        """Append one ``add`` per row to the catalog log, all or none: ``ItemsExist`` (nothing added) when
        an id was added before. Returns the log's new head."""

    async def hide_item(self, item_id: str) -> int:
        """Append a ``hide`` of ``item_id``; returns the log's new head."""
        return await self._log([CatalogChange(0, "hide", item_id)])

    async def describe_items(self, descriptions: dict[str, dict]) -> int:
        """Append a ``describe`` per item: its LLM-written description (``{"description", "source"}``, the
        offline enrichment's fields), written after it was added; returns the log's new head."""
        return await self._log([CatalogChange(0, "describe", i, d) for i, d in descriptions.items()])

    @abstractmethod
    async def _log(self, changes: list[CatalogChange]) -> int:
        """Append ``changes`` (their ``seq`` ignored) to the catalog log at once; returns the new head."""

    @abstractmethod
    async def catalog_head(self) -> int:
        """The seq of the log's last change (0: none)."""

    @abstractmethod
    async def catalog_changes(self, after: int) -> list[CatalogChange]:
        """The changes after seq ``after``, in order."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    def close(self) -> None:  # noqa: B027 - optional for backends without connections
        pass


class MemoryStore(OnlineStore):
    def __init__(self, query_capacity: int = 200_000, max_events: int = MAX_EVENTS,
                 event_id_ttl_s: float = EVENT_ID_TTL_S) -> None:  # fmt: skip
        self.name = "memory"
        self.events: dict[str, list[str]] = {}
        self.event_ids: dict[tuple[str, str], tuple[float, str]] = {}
        self.queries: OrderedDict[str, Query] = OrderedDict()
        self.capacity = query_capacity
        self.max_events, self.event_id_ttl_s = max_events, event_id_ttl_s
        self.catalog: list[CatalogChange] = []

    async def add_items(self, rows: list[dict]) -> int:
        added = {c.item_id for c in self.catalog if c.op == "add"}
        taken = [r["item_id"] for r in rows if r["item_id"] in added]
        if taken:
            raise ItemsExist(taken)
        return await self._log([CatalogChange(0, "add", r["item_id"], dict(r)) for r in rows])

    async def _log(self, changes: list[CatalogChange]) -> int:
        self.catalog += [replace(c, seq=len(self.catalog) + 1 + i) for i, c in enumerate(changes)]
        return len(self.catalog)

    async def catalog_head(self) -> int:
        return len(self.catalog)

    async def catalog_changes(self, after: int) -> list[CatalogChange]:
        return self.catalog[after:]

    async def append(self, user_id: str, item_ids: list[str], event_id: str | None = None) -> Appended:
        now = time.time()
        if event_id is not None:
            seen = self.event_ids.get((user_id, event_id))
            if seen is not None and seen[0] > now - self.event_id_ttl_s:
                return Appended.repeat(seen[1])
        seq = self.events.setdefault(user_id, [])
        seq.extend(item_ids)
        out = Appended.fresh(list(seq), len(item_ids), self.max_events)
        del seq[: out.dropped]
        if event_id is not None:
            self.event_ids[(user_id, event_id)] = (now, out.record())
        return out

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


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``: one writer at a time, across processes), committed when
    the block ends, rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SQLiteStore(OnlineStore):
    """One SQLite file in WAL mode: readers never wait for a writer, writers wait up to ``timeout_s``.
    Calls run on one worker thread of the store's own (its connection's thread), never on the caller's
    event loop: a slow read or a lock wait delays only the store's callers."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
                                       item_id TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
    CREATE TABLE IF NOT EXISTS event_ids (user_id TEXT NOT NULL, event_id TEXT NOT NULL, record TEXT NOT NULL,
                                          at REAL NOT NULL, PRIMARY KEY (user_id, event_id));
    CREATE INDEX IF NOT EXISTS event_ids_at ON event_ids (at);
    CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, text TEXT NOT NULL, source TEXT NOT NULL,
                                        at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS queries_at ON queries (at);
    CREATE TABLE IF NOT EXISTS catalog (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL,
                                        item_id TEXT NOT NULL, record TEXT NOT NULL, at REAL NOT NULL);
    CREATE UNIQUE INDEX IF NOT EXISTS catalog_added ON catalog (item_id) WHERE op = 'add';
    """

    def __init__(self, path: str | Path, timeout_s: float = 2.0, query_capacity: int = 200_000,
                 max_events: int = MAX_EVENTS, event_id_ttl_s: float = EVENT_ID_TTL_S) -> None:  # fmt: skip
        self.path = Path(path)
        self.name = f"sqlite:{self.path.name}"
        self.timeout_s = timeout_s
        self.capacity = query_capacity
        self.max_events, self.event_id_ttl_s = max_events, event_id_ttl_s
        self.puts = self.appends = 0
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # close() may come from another thread than the worker's
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="q2rec-sqlite")

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

    def _call(self, fn):
        with self._lock:
            try:
                return fn(self._conn())
            except (sqlite3.Error, OSError) as exc:
                self._close()  # reconnect on the next call: the file may be back
                raise StoreUnavailable(self.name, exc) from exc

    async def _run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._call, fn)

    async def append(self, user_id: str, item_ids: list[str], event_id: str | None = None) -> Appended:
        self.appends += 1
        trim = self.appends % 1000 == 0

        def tx(db: sqlite3.Connection) -> Appended:
            with _immediate(db):  # one writer at a time, across processes: repeats store once
                now = time.time()
                if trim:  # now and then, forget the event ids past their retention
                    db.execute("DELETE FROM event_ids WHERE at <= ?", (now - self.event_id_ttl_s,))
                if event_id is not None:
                    row = db.execute("SELECT record FROM event_ids WHERE user_id = ? AND event_id = ? AND at > ?",
                                     (user_id, event_id, now - self.event_id_ttl_s)).fetchone()  # fmt: skip
                    if row is not None:
                        return Appended.repeat(row[0])
                db.executemany("INSERT INTO events (user_id, item_id, at) VALUES (?, ?, ?)",
                               [(user_id, i, now) for i in item_ids])  # fmt: skip
                rows = db.execute("SELECT item_id FROM events WHERE user_id = ? ORDER BY seq", (user_id,))
                out = Appended.fresh([r[0] for r in rows], len(item_ids), self.max_events)
                if out.dropped:
                    db.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE user_id = ? "
                               "ORDER BY seq LIMIT ?)", (user_id, out.dropped))  # fmt: skip
                if event_id is not None:
                    db.execute("INSERT OR REPLACE INTO event_ids VALUES (?, ?, ?, ?)",
                               (user_id, event_id, out.record(), now))  # fmt: skip
                return out

        return await self._run(tx)

    async def appended(self, user_id: str) -> list[str]:
        q = "SELECT item_id FROM events WHERE user_id = ? ORDER BY seq"
        return await self._run(lambda db: [r[0] for r in db.execute(q, (user_id,))])

    async def get_query(self, key: str) -> Query | None:
        row = await self._run(
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

        await self._run(tx)

    async def pop_query(self, key: str) -> bool:
        return await self._run(
            lambda db: db.execute("DELETE FROM queries WHERE key = ?", (key,)).rowcount > 0
        )

    async def add_items(self, rows: list[dict]) -> int:
        def tx(db: sqlite3.Connection) -> int:
            with _immediate(db):
                ids = [r["item_id"] for r in rows]
                taken: list[str] = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    q = f"SELECT item_id FROM catalog WHERE op = 'add' AND item_id IN ({','.join('?' * len(chunk))})"
                    taken += [r[0] for r in db.execute(q, chunk)]
                if taken:
                    raise ItemsExist(taken)
                now = time.time()
                db.executemany("INSERT INTO catalog (op, item_id, record, at) VALUES ('add', ?, ?, ?)",
                               [(r["item_id"], CatalogChange(0, "add", r["item_id"], r).record(), now)
                                for r in rows])  # fmt: skip
                return int(db.execute("SELECT MAX(seq) FROM catalog").fetchone()[0])

        return await self._run(tx)

    async def _log(self, changes: list[CatalogChange]) -> int:
        def tx(db: sqlite3.Connection) -> int:
            with _immediate(db):
                now = time.time()
                db.executemany("INSERT INTO catalog (op, item_id, record, at) VALUES (?, ?, ?, ?)",
                               [(c.op, c.item_id, c.record(), now) for c in changes])  # fmt: skip
                return int(db.execute("SELECT MAX(seq) FROM catalog").fetchone()[0])

        return await self._run(tx)

    async def catalog_head(self) -> int:
        return await self._run(
            lambda db: int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM catalog").fetchone()[0])
        )

    async def catalog_changes(self, after: int) -> list[CatalogChange]:
        q = "SELECT seq, record FROM catalog WHERE seq > ? ORDER BY seq"
        return await self._run(lambda db: [CatalogChange.parse(*r) for r in db.execute(q, (after,))])

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1 FROM events LIMIT 1").fetchall())  # reads the file

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None

    def close(self) -> None:
        with self._lock:
            self._close()


class RedisStore(OnlineStore):
    """Redis through its asyncio client: events are one list per user, appended, capped and checked for a
    repeated event id by one Lua script (atomic on the server); queries are strings with a time to live.
    Keys start with ``q2rec:<namespace>:``, so datasets can share a server."""

    # KEYS[1]: the user's events; KEYS[2] (optional): the event id's record. ARGV: cap, ttl, items...
    APPEND = """
    if #KEYS == 2 then
      local seen = redis.call('GET', KEYS[2])
      if seen then return {1, seen} end
    end
    local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
    local items = redis.call('LRANGE', KEYS[1], 0, -1)
    local count = #ARGV - 2
    local dropped = math.max(0, n - tonumber(ARGV[1]))
    if dropped > 0 then redis.call('LTRIM', KEYS[1], dropped, -1) end
    if #KEYS == 2 then
      redis.call('SET', KEYS[2], cjson.encode({count, n - count, n - dropped}), 'EX', ARGV[2])
    end
    return {0, items}
    """
    # KEYS[1]: the catalog log, KEYS[2]: the hash of added ids. ARGV: ids..., then their records (as many)
    ADD_ITEMS = """
    local n = #ARGV / 2
    local taken = {}
    for i = 1, n do
      if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then table.insert(taken, ARGV[i]) end
    end
    if #taken > 0 then return {1, taken} end
    local head = 0
    for i = 1, n do
      head = redis.call('RPUSH', KEYS[1], ARGV[n + i])
      redis.call('HSET', KEYS[2], ARGV[i], head)
    end
    return {0, head}
    """

    def __init__(self, url: str, namespace: str, timeout_s: float = 0.5, query_ttl_s: int = 30 * 86400,
                 max_events: int = MAX_EVENTS, event_id_ttl_s: float = EVENT_ID_TTL_S) -> None:  # fmt: skip
        self.url = url
        u = urlsplit(url)
        self.name = f"{u.scheme}://{u.hostname}:{u.port or 6379}{u.path}"  # never a password
        self.prefix = f"q2rec:{namespace}:"
        self.timeout_s = timeout_s
        self.ttl = query_ttl_s
        self.max_events, self.event_id_ttl_s = max_events, event_id_ttl_s
        self._client = None
        self._append = None
        self._add_items = None

    def _redis(self):
        if self._client is None:  # made on first use, on the event loop that uses it
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                decode_responses=True, retry_on_timeout=False,
            )  # fmt: skip
            self._append = self._client.register_script(self.APPEND)
            self._add_items = self._client.register_script(self.ADD_ITEMS)
        return self._client

    async def _run(self, coro_fn):
        import redis.exceptions

        try:
            return await coro_fn(self._redis())
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(self.name, exc) from exc

    def _events(self, user_id: str) -> str:
        return f"{self.prefix}events:{user_id}"

    def _event_id(self, user_id: str, event_id: str) -> str:
        return f"{self.prefix}event-id:{json.dumps([user_id, event_id])}"

    def _query(self, key: str) -> str:
        return f"{self.prefix}query:{key}"

    @property
    def _catalog(self) -> str:
        return f"{self.prefix}catalog"

    async def append(self, user_id: str, item_ids: list[str], event_id: str | None = None) -> Appended:
        keys = [self._events(user_id)] + ([self._event_id(user_id, event_id)] if event_id is not None else [])
        ttl = max(1, int(self.event_id_ttl_s))
        kind, got = await self._run(lambda r: self._append(keys=keys, args=[self.max_events, ttl, *item_ids]))
        if int(kind) == 1:
            return Appended.repeat(got)
        return Appended.fresh(list(got), len(item_ids), self.max_events)

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

    async def add_items(self, rows: list[dict]) -> int:
        ids = [r["item_id"] for r in rows]
        records = [CatalogChange(0, "add", r["item_id"], r).record() for r in rows]
        keys = [self._catalog, f"{self._catalog}-added"]
        kind, got = await self._run(lambda r: self._add_items(keys=keys, args=[*ids, *records]))
        if int(kind) == 1:
            raise ItemsExist(list(got))
        return int(got)

    async def _log(self, changes: list[CatalogChange]) -> int:
        records = [c.record() for c in changes]
        return int(await self._run(lambda r: r.rpush(self._catalog, *records)))

    async def catalog_head(self) -> int:
        return int(await self._run(lambda r: r.llen(self._catalog)))

    async def catalog_changes(self, after: int) -> list[CatalogChange]:
        got = await self._run(lambda r: r.lrange(self._catalog, after, -1))
        return [CatalogChange.parse(after + 1 + i, rec) for i, rec in enumerate(got)]

    async def ping(self) -> None:
        await self._run(lambda r: r.ping())


def open_store(settings: StoreSettings, artifacts: Path, query_capacity: int) -> OnlineStore:
    """The store ``settings`` names, for the artifacts at ``artifacts``."""
    limits = {"max_events": settings.max_events, "event_id_ttl_s": settings.event_id_ttl_s}
    if settings.backend == "memory":
        return MemoryStore(query_capacity, **limits)
    if settings.backend == "sqlite":
        path = Path(settings.path) if settings.path else artifacts / "online" / "state.sqlite3"
        return SQLiteStore(path, settings.timeout_s, query_capacity, **limits)
    url = settings.url or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ValueError(f"store.url: the redis backend needs a redis:// URL (or ${REDIS_URL_ENV}), got none")
    return RedisStore(
        url,
        settings.namespace or artifacts.resolve().name,
        settings.timeout_s,
        settings.query_ttl_s,
        **limits,
    )
