"""Who is calling: the master key or a virtual key, resolved to a :class:`Principal`.

Junk is rejected by the key's checksum before any database read; known keys are cached for at
most ``cache_ttl_s`` (2 s), so a revocation reaches every gateway process within that time. All
rejections get the same message, whatever the reason, so they reveal nothing about which keys exist.

Lookups are single-flight: the requests that miss the cache for one key together share one
database read. A key in use is read again in the background once a quarter of its time in the cache
is left, so in steady traffic no request waits for the database (without this, every ``cache_ttl_s``
each concurrent request of a busy key made its own read, and at 64 clients on PostgreSQL those
reads queued behind each other: p99 86 ms instead of 34, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from functools import partial

from modelyard.errors import AuthenticationError
from modelyard.policy.keys import key_hint, well_formed
from modelyard.store.base import KeyRecord, Role, Store

UNIFORM_REJECTION = (
    "invalid or missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
)
NEGATIVE_CACHE_S = 1.0
REFRESH_WHEN_LEFT = 0.25
"""A cached key in use is read again (in the background) once this share of its TTL is left."""

log = logging.getLogger("modelyard.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    role: Role
    key: KeyRecord | None
    """The virtual key; None for the master key or when no auth is configured."""
    hint: str
    """Safe to log: the key's prefix and last 4 characters."""

    @property
    def is_master(self) -> bool:
        return self.key is None and self.role is Role.ADMIN

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None


ANONYMOUS = Principal(Role.ADMIN, None, "-")
"""The caller when neither a master key nor any virtual key is configured (a local, open gateway)."""


def presented_key(headers: dict[str, str]) -> str | None:
    """The key from ``Authorization: Bearer``, ``x-api-key`` or ``api-key`` (never the query string)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("api-key") or None


class Authenticator:
    def __init__(self, master_key: str | None, store: Store | None, *, cache_ttl_s: float = 2.0) -> None:
        self._master_digest = hashlib.sha256(master_key.encode()).digest() if master_key else None
        self._store = store
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._reading: dict[str, asyncio.Task[KeyRecord | None]] = {}
        self._generation = 0  # bumped by forget(): a read that began before it is not cached
        self.virtual_keys_seen = False
        self.reads = 0
        """Key reads from the store started so far (for tests and metrics)."""

    @property
    def open(self) -> bool:
        """No master key: the gateway is open to anyone who can reach it (bind to loopback!)."""
        return self._master_digest is None

    async def authenticate(self, headers: dict[str, str], now: float | None = None) -> Principal:
        key = presented_key(headers)
        if key is None:
            if self.open:
                return ANONYMOUS
            raise AuthenticationError(UNIFORM_REJECTION)
        hashed = hashlib.sha256(key.encode())
        if self._master_digest is not None and hmac.compare_digest(hashed.digest(), self._master_digest):
            return Principal(Role.ADMIN, None, "master")
        key_hash = hashed.hexdigest()  # = hash_key(key): one SHA-256 for both checks
        mono = time.monotonic()
        cached = self._cache.get(key_hash)  # only well-formed keys are ever cached
        if cached is not None and cached[0] > mono:
            record = cached[1]
            if (
                record is not None
                and cached[0] - mono < self._ttl * REFRESH_WHEN_LEFT
                and key_hash not in self._reading
            ):
                self._read(key_hash)  # ahead of expiry; this request goes on with the cached record
        else:
            if not well_formed(key) or self._store is None:
                if self.open and not key.startswith("myd_"):
                    # An open gateway ignores whatever placeholder key an SDK insists on sending.
                    return ANONYMOUS
                raise AuthenticationError(UNIFORM_REJECTION)
            record = await asyncio.shield(self._reading.get(key_hash) or self._read(key_hash))
        if record is None or not record.active(time.time() if now is None else now):
            raise AuthenticationError(UNIFORM_REJECTION)
        return Principal(record.role, record, key_hint(key))

    def _read(self, key_hash: str) -> asyncio.Task[KeyRecord | None]:
        """Start the one store read of ``key_hash`` that every caller missing the cache waits on."""
        task = asyncio.create_task(self._fetch(key_hash))
        self._reading[key_hash] = task
        self.reads += 1
        task.add_done_callback(partial(self._read_done, key_hash))
        return task

    async def _fetch(self, key_hash: str) -> KeyRecord | None:
        assert self._store is not None
        mono = time.monotonic()  # before the read: the entry's age counts from here
        generation = self._generation
        record = await self._store.key_by_hash(key_hash)
        if generation == self._generation:
            self._cache[key_hash] = (mono + (self._ttl if record is not None else NEGATIVE_CACHE_S), record)
            if len(self._cache) > 100_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > mono}
        return record

    def _read_done(self, key_hash: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._reading.get(key_hash) is task:
            del self._reading[key_hash]
        if not task.cancelled() and task.exception() is not None:  # retrieved: waiters re-raise it
            log.debug("key lookup failed: %s", task.exception())

    async def aclose(self) -> None:
        """Wait for the key reads under way (before the store closes), so none is left pending."""
        if self._reading:
            await asyncio.gather(*self._reading.values(), return_exceptions=True)

    def forget(self, key_hash: str | None = None) -> None:
        """Drop cached lookups (this process sees its own revocations at once)."""
        self._generation += 1
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)
