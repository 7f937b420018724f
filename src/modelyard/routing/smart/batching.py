"""Natural micro-batching of prompt embeddings: prompts that arrive while a batch is being
embedded go together in the next one, so concurrent decisions share one model run (the encoder
runs one batch at a time anyway) instead of queueing one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Encode = Callable[[list[str]], Awaitable[Sequence[Any]]]


class EmbeddingBatcher:
    """``await embed(text)`` → its vector; at most ``max_batch`` texts per model run."""

    def __init__(self, encode: Encode, *, max_batch: int = 16) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0
        self.texts = 0

    async def embed(self, text: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            live = [(text, future) for text, future in batch if not future.done()]  # skip cancelled callers
            if not live:
                continue
            try:
                vectors = await self._encode([text for text, _ in live])
            except BaseException as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            self.texts += len(live)
            for (_, future), vector in zip(live, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)

    async def aclose(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending = []


__all__ = ["EmbeddingBatcher"]
