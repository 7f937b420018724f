"""The response cache the gateway consults: policy per model, lookup, and writes after the answer.

One :class:`ResponseCache` per gateway (built in ``AppState.build``). For each chat request:

1. :meth:`ResponseCache.lookup` (after admission): the request's directives (``Cache-Control``
   header, ``cache`` body field), then the exact key, then — if the model opted in — the meaning.
2. On a hit the stored answer is sent (:mod:`modelyard.cache.replay`); on a miss the answer is
   stored after it was sent: :meth:`store` for a plain answer, :meth:`tee` for a stream (stored
   only if it ended cleanly). Writes run in the background and never fail a request.

Directives: ``Cache-Control: no-store`` (or body ``"cache": false`` / ``"no-store"``) — neither
looked up nor stored, reported ``bypass``; ``Cache-Control: no-cache`` (or ``"cache":
"no-cache"``) — not looked up, the fresh answer is stored, reported ``miss``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from modelyard.cache.backends import CacheBackend, MemoryBackend, RedisBackend, SqliteBackend
from modelyard.cache.keys import Conversation, conversation_of, exact_key, partition_key, tenant_of
from modelyard.cache.replay import StreamAccumulator, fresh_body, replay_stream
from modelyard.cache.semantic import SemanticIndex
from modelyard.cache.shared_index import SharedIndexFeed
from modelyard.cache.thresholds import threshold_for_precision
from modelyard.config.cache_schema import CacheConfig, ModelCacheConfig
from modelyard.errors import InvalidRequestError
from modelyard.providers.base import WireProtocol
from modelyard.routing.usage import Usage

log = logging.getLogger("modelyard.cache")

__all__ = ["CacheLookup", "Embedder", "ModelCachePolicy", "ResponseCache", "policies_for"]

CONTEXT_CHARS = 2000
"""Earlier turns are embedded from their most recent characters (the model reads 256 tokens)."""
LARGE_PARTITION = 16_384
"""Partitions bigger than this are searched on a worker thread, not the event loop."""


class Embedder(Protocol):
    async def start(self) -> None: ...

    async def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit vectors, one row per text, computed off the event loop."""
        ...


@dataclass(frozen=True, slots=True)
class ModelCachePolicy:
    """The effective cache settings of one model (global ``cache:`` with its overrides)."""

    ttl_s: float
    semantic: bool
    threshold: float
    context_threshold: float
    include_tools: bool


def policies_for(
    config: CacheConfig, models: dict[str, ModelCacheConfig | None]
) -> dict[str, ModelCachePolicy]:
    """Model name → effective policy, for models that are cached at all."""
    out: dict[str, ModelCachePolicy] = {}
    sem = config.semantic
    for name, override in models.items():
        enabled = config.enabled if override is None or override.enabled is None else override.enabled
        semantic_override = override.semantic if override is not None else None
        semantic = sem.enabled
        threshold = sem.threshold
        precision = sem.target_precision
        include_tools = sem.include_tools
        if semantic_override is not None:
            if semantic_override.enabled is not None:
                semantic = semantic_override.enabled
                enabled = enabled or semantic  # opting a model in to semantic turns its cache on
            if semantic_override.threshold is not None:
                threshold = semantic_override.threshold
            elif semantic_override.target_precision is not None:
                threshold, precision = None, semantic_override.target_precision
            if semantic_override.include_tools is not None:
                include_tools = semantic_override.include_tools
        if not enabled:
            continue
        out[name] = ModelCachePolicy(
            ttl_s=override.ttl_s if override is not None and override.ttl_s is not None else config.ttl_s,
            semantic=semantic,
            threshold=threshold if threshold is not None else threshold_for_precision(precision),
            context_threshold=sem.context_threshold,
            include_tools=include_tools,
        )
    return out


@dataclass(slots=True)
class CacheLookup:
    """What the lookup found and what to do after the answer."""

    result: str
    """``hit``, ``miss`` or ``bypass``."""
    kind: str = "exact"
    """``exact`` or ``semantic``: the tier that answered (hit) or the last one consulted."""
    answer: bytes | None = None
    """On a hit: the stored answer with a fresh id."""
    answer_dict: dict[str, Any] | None = None
    write: bool = False
    key: str | None = None
    policy: ModelCachePolicy | None = None
    partition: str | None = None
    vectors: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None] | None = None
    similarity: float | None = None
    lookup_ms: float = 0.0

    def replay(self, protocol: WireProtocol, request: dict[str, Any]) -> list[bytes]:
        """A hit's answer as SSE events (for a streamed request)."""
        assert self.answer_dict is not None
        return replay_stream(protocol, self.answer_dict, request)


BYPASS = CacheLookup("bypass")


def directives(headers: dict[str, str], body: dict[str, Any]) -> tuple[bool, bool]:
    """(look up, store) from ``Cache-Control`` and the body's ``cache`` field; a bad ``cache``
    value is a 400."""
    lookup = store = True
    control = headers.get("cache-control")
    if control:
        tokens = {part.strip().lower() for part in control.split(",")}
        if "no-store" in tokens:
            lookup = store = False
        elif "no-cache" in tokens or "max-age=0" in tokens:
            lookup = False
    if "cache" in body:
        value = body["cache"]
        if value is False or value == "no-store":
            lookup = store = False
        elif value == "no-cache":
            lookup = False
        elif value is not True and value is not None:
            shown = orjson.dumps(value).decode()
            raise InvalidRequestError(
                f'cache must be true, false, "no-cache" or "no-store", not {shown}',
                param="cache",
            )
    return lookup, store


class ResponseCache:
    """Exact (and, per model, semantic) response cache; see the module docstring."""

    def __init__(
        self,
        config: CacheConfig,
        policies: dict[str, ModelCachePolicy],
        backend: CacheBackend,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config
        self.policies = policies
        self.backend = backend
        self.embedder = embedder
        self.index: SemanticIndex | None = None
        if embedder is not None and any(p.semantic for p in policies.values()):
            self.index = SemanticIndex(dimensions=384, max_entries=config.semantic.max_entries)
        self._pending: set[asyncio.Task[None]] = set()
        self._embedding_failed = False
        self.feed: SharedIndexFeed | None = None
        """With Redis: the semantic entries shared with other replicas."""

    @classmethod
    def build(
        cls,
        config: CacheConfig,
        models: dict[str, ModelCacheConfig | None],
        *,
        home: str,
        redis_url: str | None,
        embedder: Callable[[], Embedder] | None,
    ) -> ResponseCache | None:
        """The gateway's cache, or None when no model is cached."""
        policies = policies_for(config, models)
        if not policies:
            return None
        backend: CacheBackend
        if config.backend == "sqlite":
            path = config.path or str(Path(home).expanduser() / "cache.db")
            backend = SqliteBackend(str(Path(path).expanduser().absolute()), max_entries=config.max_entries)
        elif config.backend == "redis":
            assert redis_url is not None  # checked when the config was loaded
            backend = RedisBackend(redis_url, prefix=config.redis_prefix)
        else:
            backend = MemoryBackend(max_entries=config.max_entries, max_bytes=config.max_bytes)
        semantic = any(p.semantic for p in policies.values())
        cache = cls(config, policies, backend, embedder=embedder() if semantic and embedder else None)
        if cache.index is not None and redis_url is not None and config.backend == "redis":
            cache.feed = SharedIndexFeed(
                redis_url, config.redis_prefix, cache.index, max_len=config.semantic.max_entries * 10
            )
        return cache

    # -- lookup --------------------------------------------------------------------------------
    async def lookup(
        self, model: str, client: WireProtocol, body: dict[str, Any], principal: Any, headers: dict[str, str]
    ) -> CacheLookup | None:
        """None when no cache applies to ``model``."""
        policy = self.policies.get(model)
        if policy is None:
            directives(headers, body)  # a bad `cache` value is still an error
            return None
        started = time.perf_counter()
        look, store = directives(headers, body)
        if not store:
            return CacheLookup("bypass", policy=policy)
        tenant = tenant_of(principal)
        key = exact_key(tenant, model, client, body)
        found = CacheLookup("miss", write=True, key=key, policy=policy)
        if look:
            stored = await self.backend.get(key)
            if stored is not None:
                found.result = "hit"
                found.answer, found.answer_dict = fresh_body(client, stored)
        semantic = (
            policy.semantic and self.index is not None and (policy.include_tools or not body.get("tools"))
        )
        conversation = conversation_of(client, body) if semantic else None
        if found.result == "miss" and conversation is not None:
            found.kind = "semantic"
            await self._semantic_lookup(found, tenant, model, client, conversation, policy, look)
        found.lookup_ms = (time.perf_counter() - started) * 1000
        return found

    async def _semantic_lookup(
        self,
        found: CacheLookup,
        tenant: str,
        model: str,
        client: WireProtocol,
        conversation: Conversation,
        policy: ModelCachePolicy,
        look: bool,
    ) -> None:
        assert self.embedder is not None and self.index is not None
        texts = [conversation.query]
        if conversation.context:
            texts.append(conversation.context[-CONTEXT_CHARS:])
        try:
            await self.embedder.start()  # loads the model once (outside the lookup's time limit)
            async with asyncio.timeout(self.config.semantic.lookup_timeout_s):
                vectors = await self.embedder.encode(texts)
        except TimeoutError:
            log.info(
                "semantic lookup gave up after %gs: answered as a miss", self.config.semantic.lookup_timeout_s
            )
            return
        except Exception as exc:
            if not self._embedding_failed:
                log.warning("semantic cache off: the embedding model failed (%s); exact caching goes on", exc)
                self._embedding_failed = True
            return
        query = vectors[0]
        context = vectors[1] if len(vectors) > 1 else None
        found.partition = partition_key(tenant, model, conversation)
        found.vectors = (query, context)
        if not look:
            return
        index, partition = self.index, found.partition

        def search() -> Any:
            return index.search(
                partition,
                query,
                context,
                threshold=policy.threshold,
                context_threshold=policy.context_threshold,
            )

        match = await asyncio.to_thread(search) if len(index) > LARGE_PARTITION else search()
        if match is None:
            return
        stored = await self.backend.get(match.key)
        if stored is None:
            return
        found.result = "hit"
        found.similarity = match.similarity
        found.answer, found.answer_dict = fresh_body(client, stored)

    # -- writes --------------------------------------------------------------------------------
    def store(self, found: CacheLookup, client: WireProtocol, answer: bytes, usage: Usage) -> None:
        """Store a plain answer (in the background)."""
        if not found.write or len(answer) > self.config.max_entry_bytes:
            return
        self._spawn(self._write(found, _with_usage(client, answer, usage)))

    def tee(
        self, found: CacheLookup, client: WireProtocol, first: bytes, rest: AsyncIterator[bytes]
    ) -> tuple[AsyncIterator[bytes], Callable[[Usage], None]]:
        """(the stream to send on, what to call with the usage once it was sent completely)."""
        accumulator = StreamAccumulator(client, self.config.max_entry_bytes * 8)  # SSE framing costs ~4-8×
        accumulator.feed(first)

        async def passing() -> AsyncIterator[bytes]:
            async for chunk in rest:
                accumulator.feed(chunk)
                yield chunk

        def completed(usage: Usage) -> None:
            body = accumulator.body()
            if body is not None and found.write and len(body) <= self.config.max_entry_bytes:
                self._spawn(self._write(found, _with_usage(client, body, usage)))

        return _Closing(passing(), rest), completed

    async def _write(self, found: CacheLookup, answer: bytes) -> None:
        assert found.key is not None and found.policy is not None
        try:
            await self.backend.set(found.key, answer, found.policy.ttl_s)
            if found.vectors is not None and found.partition is not None and self.index is not None:
                query, context = found.vectors
                self.index.add(found.partition, found.key, query, context)
                if self.feed is not None:
                    await self.feed.publish(found.partition, found.key, query, context)
        except Exception as exc:
            log.warning("could not store a cached answer (%s backend): %s", self.backend.name, exc)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the writes in flight."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def start(self) -> None:
        """Background work: following the replicas' shared semantic index (Redis only)."""
        if self.feed is not None:
            self.feed.start()

    async def aclose(self) -> None:
        await self.drain()
        if self.feed is not None:
            await self.feed.aclose()
        await self.backend.aclose()


class _Closing:
    """An async iterator that closes the stream it wraps when it is closed."""

    def __init__(self, inner: AsyncIterator[bytes], wrapped: AsyncIterator[bytes]) -> None:
        self._inner = inner
        self._wrapped = wrapped

    def __aiter__(self) -> _Closing:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._inner)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()  # type: ignore[attr-defined]
        finally:
            close = getattr(self._wrapped, "aclose", None)
            if close is not None:
                await close()


def _with_usage(client: WireProtocol, answer: bytes, usage: Usage) -> bytes:
    """A streamed answer whose client hid OpenAI usage gets the gateway's own count stored."""
    if client is WireProtocol.ANTHROPIC or b'"usage"' in answer or not usage.reported:
        return answer
    body = orjson.loads(answer)
    prompt = usage.tokens_in + usage.cache_read
    body["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.tokens_out,
        "total_tokens": prompt + usage.tokens_out,
    }
    return orjson.dumps(body)
