"""The stored form and its replay, the backends (memory, SQLite, Redis) and the vector index."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelyard.cache.backends import MemoryBackend, RedisBackend, SqliteBackend
from modelyard.cache.replay import StreamAccumulator, fresh_body, replay_stream
from modelyard.cache.semantic import SemanticIndex
from modelyard.cache.service import directives, policies_for
from modelyard.config.cache_schema import CacheConfig, ModelCacheConfig
from modelyard.errors import InvalidRequestError
from modelyard.providers.base import WireProtocol
from tests.fakes.upstream import recording

OA = WireProtocol.OPENAI
AN = WireProtocol.ANTHROPIC
REDIS_ENV = "MODELYARD_TEST_REDIS_URL"


def _fold(protocol: WireProtocol, stream: bytes, chunk: int = 7) -> bytes | None:
    acc = StreamAccumulator(protocol, 1 << 20)
    for i in range(0, len(stream), chunk):  # arbitrary splits, as TCP delivers them
        acc.feed(stream[i : i + chunk])
    return acc.body()


@pytest.mark.parametrize("name", ["rec-text", "rec-tools", "rec-thinking", "rec-length"])
@pytest.mark.parametrize("protocol", [OA, AN])
def test_a_recorded_stream_folds_into_its_plain_answer_and_replays_the_same(
    protocol: WireProtocol, name: str
) -> None:
    vendor = "openai" if protocol is OA else "anthropic"
    sse = recording(vendor, name + (".usage.sse" if protocol is OA else ".sse"))
    folded = _fold(protocol, sse)
    assert folded is not None
    plain = orjson.loads(recording(vendor, name + ".json"))
    body = orjson.loads(folded)
    if protocol is OA:
        assert body["choices"][0]["message"].get("content") == plain["choices"][0]["message"].get("content")
        assert body["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
        calls = [c["function"] for c in body["choices"][0]["message"].get("tool_calls") or []]
        assert calls == [c["function"] for c in plain["choices"][0]["message"].get("tool_calls") or []]
    else:
        kinds = [b["type"] for b in body["content"]]
        assert kinds == [b["type"] for b in plain["content"]]
        assert body["stop_reason"] == plain["stop_reason"]
    # Replaying the folded body and folding the replay gives the same answer back.
    _, fresh = fresh_body(protocol, folded)
    replay = b"".join(replay_stream(protocol, fresh, {"stream_options": {"include_usage": True}}))
    again = _fold(protocol, replay, chunk=13)
    assert again is not None
    expected, got = orjson.loads(folded), orjson.loads(again)
    for field in ("id", "created"):
        expected.pop(field, None)
        got.pop(field, None)
    assert got == expected


@pytest.mark.parametrize(
    ("protocol", "stream"),
    [
        (OA, recording("openai", "rec-text.sse")[:-30]),  # cut before [DONE]
        (AN, recording("anthropic", "rec-error-mid.sse")),  # an error event mid-stream
        (AN, recording("anthropic", "rec-text.sse").replace(b"message_stop", b"message_stup")),
        (
            OA,
            b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
            b"data: [DONE]\n\n",
        ),
    ],
)
def test_cut_or_failed_streams_are_never_stored(protocol: WireProtocol, stream: bytes) -> None:
    assert _fold(protocol, stream) is None


def test_hits_get_fresh_ids() -> None:
    stored = recording("openai", "rec-text.json")
    one, _ = fresh_body(OA, stored)
    two, _ = fresh_body(OA, stored)
    assert orjson.loads(one)["id"] != orjson.loads(two)["id"]
    assert orjson.loads(one)["choices"] == orjson.loads(stored)["choices"]
    message = recording("anthropic", "rec-text.json")
    assert orjson.loads(fresh_body(AN, message)[0])["id"].startswith("msg_")


def test_directives() -> None:
    assert directives({}, {}) == (True, True)
    assert directives({"cache-control": "no-cache"}, {}) == (False, True)
    assert directives({"cache-control": "No-Store, max-age=0"}, {}) == (False, False)
    assert directives({}, {"cache": False}) == (False, False)
    assert directives({}, {"cache": "no-cache"}) == (False, True)
    with pytest.raises(InvalidRequestError) as caught:
        directives({}, {"cache": "sometimes"})
    assert caught.value.param == "cache"


def test_policies_inherit_and_override() -> None:
    config = CacheConfig(enabled=True, ttl_s=60)
    policies = policies_for(
        config,
        {
            "a": None,
            "b": ModelCacheConfig(enabled=False),
            "c": ModelCacheConfig.model_validate(
                {"ttl_s": 5, "semantic": {"enabled": True, "threshold": 0.9}}
            ),
        },
    )
    assert set(policies) == {"a", "c"}
    assert policies["a"].ttl_s == 60 and not policies["a"].semantic
    assert policies["c"].ttl_s == 5 and policies["c"].semantic and policies["c"].threshold == 0.9
    # A model opting in to semantic caching turns its cache on even when the global one is off.
    off = policies_for(
        CacheConfig(), {"x": ModelCacheConfig.model_validate({"semantic": {"enabled": True}}), "y": None}
    )
    assert set(off) == {"x"}


async def test_memory_backend_is_a_bounded_lru_with_ttl() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=100)
    for name in "abc":
        await backend.set(name, b"x" * 10, 60)
    assert await backend.get("a") == b"x" * 10  # a is now the most recent
    await backend.set("d", b"y", 60)
    assert await backend.get("b") is None and await backend.get("a") is not None
    await backend.set("big", b"z" * 95, 60)  # over the byte bound: the oldest go
    assert backend.bytes <= 100
    await backend.set("short", b"s", 0.01)
    await asyncio.sleep(0.02)
    assert await backend.get("short") is None
    await backend.set("huge", b"h" * 101, 60)  # larger than the whole cache: not kept
    assert await backend.get("huge") is None
    held = await backend.count()
    assert held and await backend.clear() == held
    assert (await backend.count(), backend.bytes) == (0, 0)


async def test_sqlite_backend_survives_a_reopen_and_expires(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    backend = SqliteBackend(path, max_entries=1000)
    await backend.set("k", b"answer", 60)
    await backend.set("gone", b"x", 0.01)
    await backend.aclose()
    reopened = SqliteBackend(path, max_entries=1000)
    assert await reopened.get("k") == b"answer"
    await asyncio.sleep(0.02)
    assert await reopened.get("gone") is None
    await reopened.aclose()


async def test_sqlite_backend_keeps_at_most_max_entries(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "c.db"), max_entries=10)
    backend.PURGE_EVERY = 1
    for i in range(30):
        await backend.set(f"k{i}", b"v", 60)
    assert await backend.get("k0") is None and await backend.get("k29") == b"v"
    assert await backend.count() == 10
    assert await backend.clear() == 10 and await backend.count() == 0
    await backend.aclose()


async def test_redis_backend_for_real() -> None:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 (a Redis you may write to) to run this test")
    prefix = f"modelyard-test:cache:{uuid.uuid4().hex[:12]}:"
    one, two = RedisBackend(url, prefix=prefix), RedisBackend(url, prefix=prefix)
    try:
        await one.set("k", b"shared answer", 60)
        assert await two.get("k") == b"shared answer"  # another replica sees it
        await one.set("short", b"x", 0.05)
        await asyncio.sleep(0.1)
        assert await two.get("short") is None
        assert await two.clear() == 1 and await one.get("k") is None  # clears the prefix, for all
    finally:
        import redis.asyncio as aioredis

        client: Any = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await one.aclose()
        await two.aclose()


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_index_matches_within_a_partition_only_and_checks_context() -> None:
    index = SemanticIndex(dimensions=384, max_entries=4)
    q, c, other = _unit(1), _unit(2), _unit(3)
    index.add("p", "k1", q)
    assert index.search("p", q, threshold=0.9, context_threshold=0.95).key == "k1"  # type: ignore[union-attr]
    assert index.search("other-tenant", q, threshold=0.9, context_threshold=0.95) is None
    assert index.search("p", other, threshold=0.9, context_threshold=0.95) is None
    index.add("ctx", "k2", q, c)
    assert index.search("ctx", q, c, threshold=0.9, context_threshold=0.95) is not None
    assert index.search("ctx", q, other, threshold=0.9, context_threshold=0.95) is None
    for i in range(10):  # a ring: the oldest entries are overwritten
        index.add("p", f"r{i}", _unit(100 + i))
    assert index.search("p", q, threshold=0.9, context_threshold=0.95) is None
    assert index.search("p", _unit(109), threshold=0.9, context_threshold=0.95).key == "r9"  # type: ignore[union-attr]


def test_config_errors_say_how_to_fix_them() -> None:
    from modelyard.config.load import load_config
    from modelyard.errors import ConfigError

    base = "embedded_models: false\ncloud_models_from_env: false\n"
    with pytest.raises(ConfigError) as missing:
        load_config(base + "cache: {enabled: true, backend: redis}\n", environ={})
    assert "cache.redis_url is required" in str(missing.value)
    with pytest.raises(ConfigError) as literal:
        load_config(base + "cache: {backend: redis, redis_url: 'redis://:pw@host'}\n", environ={})
    assert "secret reference" in str(literal.value)
    with pytest.raises(ConfigError) as unknown:
        load_config(base + "cache: {semantic: {treshold: 0.9}}\n", environ={})
    assert "cache.semantic.treshold" in str(unknown.value)
    config = load_config(
        base + "cache: {backend: redis}\nrate_limits: {backend: redis, redis_url: env:R}\n",
        environ={"R": "redis://127.0.0.1:6379/0"},
    )
    assert config.cache_redis_url == "redis://127.0.0.1:6379/0"  # falls back to the rate limiter's Redis
    assert load_config(None, environ={}).cache.enabled is False  # zero config: no cache


class _SlowEmbedder:
    """Fault injection: an embedder that takes too long, or fails."""

    def __init__(self, delay_s: float, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail

    async def start(self) -> None:
        return None

    async def encode(self, texts: list[str]) -> np.ndarray:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("embedding model crashed")
        return np.stack([_unit(len(t)) for t in texts])


@pytest.mark.parametrize("embedder", [_SlowEmbedder(1.0), _SlowEmbedder(0, fail=True)])
async def test_a_slow_or_failing_embedder_turns_semantic_lookups_into_misses(embedder: _SlowEmbedder) -> None:
    from modelyard.cache.service import ResponseCache
    from modelyard.routing.usage import Usage

    config = CacheConfig.model_validate(
        {"enabled": True, "semantic": {"enabled": True, "lookup_timeout_s": 0.05}}
    )
    cache = ResponseCache(
        config,
        policies_for(config, {"m": None}),
        MemoryBackend(max_entries=10, max_bytes=1 << 20),
        embedder=embedder,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    started = asyncio.get_running_loop().time()
    found = await cache.lookup("m", OA, body, None, {})
    assert found is not None and found.result == "miss" and found.vectors is None
    assert asyncio.get_running_loop().time() - started < 0.5
    cache.store(found, OA, recording("openai", "rec-text.json"), Usage())
    await cache.drain()
    again = await cache.lookup("m", OA, body, None, {})
    assert again is not None and again.result == "hit" and again.kind == "exact"  # exact caching goes on
    await cache.aclose()
