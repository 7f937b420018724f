"""Sharing the semantic index between replicas (and across restarts) through Redis.

With ``backend: redis`` each replica appends every semantic entry it stores to one Redis stream
(``<redis_prefix>semantic``, capped at ``semantic.max_entries`` × 10 entries) and follows that
stream in the background, adding the other replicas' entries to its own index. A replica that
starts reads the stream from the beginning, so the semantic tier survives restarts as long as the
answers it points at live (they carry their own TTL in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import numpy as np

from modelyard.cache.semantic import SemanticIndex, Vector

log = logging.getLogger("modelyard.cache")

__all__ = ["SharedIndexFeed"]

RETRY_S = 1.0
BLOCK_MS = 1000


class SharedIndexFeed:
    """Publishes this replica's entries; follows everyone's."""

    def __init__(self, url: str, prefix: str, index: SemanticIndex, *, max_len: int) -> None:
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(url)
        self._stream = prefix + "semantic"
        self._index = index
        self._max_len = max_len
        self._origin = os.urandom(8).hex().encode()  # this replica, to skip its own entries
        self._task: asyncio.Task[None] | None = None
        self.followed = 0

    async def publish(self, partition: str, key: str, query: Vector, context: Vector | None) -> None:
        fields = {
            b"o": self._origin,
            b"p": partition.encode(),
            b"k": key.encode(),
            b"q": np.asarray(query, dtype=np.float32).tobytes(),
            b"c": b"" if context is None else np.asarray(context, dtype=np.float32).tobytes(),
        }
        await self._client.xadd(self._stream, fields, maxlen=self._max_len, approximate=True)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="modelyard-cache-index-feed")

    async def _follow(self) -> None:
        last = b"0"
        while True:
            try:
                answer = await self._client.xread({self._stream: last}, count=1000, block=BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("semantic cache: cannot follow the shared index in Redis (%s); retrying", exc)
                await asyncio.sleep(RETRY_S)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get(b"o") == self._origin:
                        continue
                    context = fields.get(b"c") or b""
                    self._index.add(
                        fields[b"p"].decode(),
                        fields[b"k"].decode(),
                        np.frombuffer(fields[b"q"], dtype=np.float32),
                        np.frombuffer(context, dtype=np.float32) if context else None,
                    )
                    self.followed += 1

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._client.aclose()
