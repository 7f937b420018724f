"""Where exact-cache entries live: this process's memory (default), a SQLite file, or Redis.

Every backend maps a key to bytes with a time to live and never blocks the event loop: memory is
a bounded LRU (entries and bytes); SQLite runs its calls on one worker thread; Redis is async.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("modelyard.cache")
_T = TypeVar("_T")

__all__ = ["CacheBackend", "MemoryBackend", "RedisBackend", "SqliteBackend"]


class CacheBackend(abc.ABC):
    """Key → bytes with a TTL. ``get`` returns None for a missing or expired key."""

    name: str

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def clear(self) -> int:
        """Drop every entry; returns how many were dropped."""

    async def count(self) -> int | None:
        """Entries held (None when counting would be costly, as in a shared Redis)."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional for backends that hold nothing
        """Release connections and threads."""


class MemoryBackend(CacheBackend):
    """A least-recently-used map bounded by entry count and total bytes (this process only)."""

    name = "memory"

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self.bytes += len(value)
        while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)

    async def clear(self) -> int:
        dropped = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return dropped

    async def count(self) -> int | None:
        return len(self._entries)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_entries_stored ON cache_entries (stored_at);
"""


class SqliteBackend(CacheBackend):
    """Entries in their own SQLite file (never the ledger's), on one worker thread.

    Survives restarts; several processes on one machine may share the file (WAL mode). Bounded by
    ``max_entries``: the oldest-stored entries go first; expired entries are purged as it writes.
    """

    name = "sqlite"
    PURGE_EVERY = 256

    def __init__(self, path: str, *, max_entries: int) -> None:
        self._path = path
        self._max_entries = max_entries
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="modelyard-cache-sqlite")
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def get(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            row = (
                self._connect()
                .execute(
                    "SELECT value FROM cache_entries WHERE key = ? AND expires_at > ?", (key, time.time())
                )
                .fetchone()
            )
            return None if row is None else bytes(row[0])

        return await self._run(read)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        def write() -> None:
            db = self._connect()
            now = time.time()
            db.execute(
                "INSERT OR REPLACE INTO cache_entries (key, value, expires_at, stored_at) "
                "VALUES (?, ?, ?, ?)",
                (key, value, now + ttl_s, now),
            )
            self._writes += 1
            if (self._writes - 1) % self.PURGE_EVERY == 0:
                db.execute("DELETE FROM cache_entries WHERE expires_at <= ?", (now,))
                (count,) = db.execute("SELECT COUNT(*) FROM cache_entries").fetchone()
                if count > self._max_entries:
                    db.execute(
                        "DELETE FROM cache_entries WHERE key IN "
                        "(SELECT key FROM cache_entries ORDER BY stored_at LIMIT ?)",
                        (count - self._max_entries,),
                    )

        await self._run(write)

    async def clear(self) -> int:
        def delete() -> int:
            return int(self._connect().execute("DELETE FROM cache_entries").rowcount)

        return await self._run(delete)

    async def count(self) -> int | None:
        def count() -> int:
            (rows,) = (
                self._connect()
                .execute("SELECT COUNT(*) FROM cache_entries WHERE expires_at > ?", (time.time(),))
                .fetchone()
            )
            return int(rows)

        return await self._run(count)

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._executor.shutdown(wait=True)


class RedisBackend(CacheBackend):
    """Entries in Redis, shared by every gateway replica. Keys are ``<prefix><sha256>`` with a
    PX expiry; size bounds are Redis's own (set ``maxmemory`` and ``maxmemory-policy allkeys-lru``)."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "modelyard:cache:") -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url)
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._prefix + key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(self._prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def clear(self) -> int:
        """Deletes every key under this gateway's prefix (SCAN, then DEL in batches)."""
        dropped = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=self._prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                dropped += int(await self._client.delete(*batch))
                batch = []
        if batch:
            dropped += int(await self._client.delete(*batch))
        return dropped

    async def aclose(self) -> None:
        await self._client.aclose()
