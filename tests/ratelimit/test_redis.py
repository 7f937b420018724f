"""What only the Redis backend has: the server's clock, real-time expiry, several clients sharing
counters, the script cache (NOSCRIPT), key expiry, and clear errors when Redis is away."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid

import pytest
import redis

from modelyard.errors import GatewayError
from modelyard.policy._ratelimit_lua import BATCH_LUA
from modelyard.policy.ratelimit import LimitCheck, RateLimitBackendError, RedisRateLimiter
from tests.ratelimit.conftest import LimiterFactory


def rpm(limit: int, scope_id: str = "k1") -> LimitCheck:
    return LimitCheck("key", scope_id, "rpm", limit, 1)


async def test_real_time_window(make_redis: LimiterFactory) -> None:
    """A 1-second window on the server clock: the limit holds, Retry-After says when it frees."""
    limiter = make_redis(window_s=1.0)
    decisions = [await limiter.acquire([rpm(5)]) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    first, rejected = decisions[0], decisions[-1]
    assert rejected.at + rejected.retry_after_s == pytest.approx(first.at + 1.0, abs=0.06)
    await asyncio.sleep(rejected.retry_after_s + 0.06)  # + one bucket (17 ms) + scheduling slack
    assert (await limiter.acquire([rpm(5)])).allowed


async def test_decisions_use_the_server_clock(make_redis: LimiterFactory, redis_client: redis.Redis) -> None:
    limiter = make_redis()
    seconds, micros = redis_client.time()
    decision = await limiter.acquire([rpm(5)])
    assert decision.at == pytest.approx(seconds + micros / 1e6, abs=1.0)


async def test_settlement_on_the_server_clock(make_redis: LimiterFactory) -> None:
    limiter = make_redis()
    check = LimitCheck("key", "k1", "tpm", 1000, 900)
    decision = await limiter.acquire([check])
    assert not (await limiter.acquire([LimitCheck("key", "k1", "tpm", 1000, 500)])).allowed
    await limiter.adjust(check, -400, at=decision.at)
    assert (await limiter.acquire([LimitCheck("key", "k1", "tpm", 1000, 500)])).allowed


async def test_two_clients_share_counters(make_redis: LimiterFactory) -> None:
    one, two = make_redis(), make_redis()
    results = await asyncio.gather(*(limiter.acquire([rpm(30)]) for limiter in [one, two] * 40))
    assert sum(d.allowed for d in results) == 30


async def test_keys_expire_after_the_window(make_redis: LimiterFactory, redis_client: redis.Redis) -> None:
    limiter = make_redis(window_s=2.0)
    assert isinstance(limiter, RedisRateLimiter)
    await limiter.acquire([rpm(5)])
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"{limiter.prefix}:*"))
    assert keys == [f"{limiter.prefix}:rpm:key:k1:h", f"{limiter.prefix}:rpm:key:k1:z"]
    for key in keys:
        # The window, a lease's longest hold (1 s) and a second of grace.
        assert 3000 < redis_client.pttl(key) <= 4000


async def test_a_flushed_script_is_loaded_again(
    make_redis: LimiterFactory, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVALSHA of a script the server does not hold (first use, restart, SCRIPT FLUSH) loads it.

    A script text unique to this run stands in for a flushed cache, so the test need not flush the
    server's scripts under anyone else's feet.
    """
    unique = BATCH_LUA + f"\n-- test {uuid.uuid4().hex}\n"
    monkeypatch.setattr("modelyard.policy.ratelimit.BATCH_LUA", unique)
    sha = hashlib.sha1(unique.encode()).hexdigest()
    limiter = make_redis()
    monkeypatch.setattr(limiter, "_batch_sha", sha)
    assert redis_client.script_exists(sha) == [False]
    assert (await limiter.acquire([rpm(1)])).allowed
    assert redis_client.script_exists(sha) == [True]
    assert not (await limiter.acquire([rpm(1)])).allowed


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # free now; nothing listens on it


async def test_an_unreachable_redis_raises_a_clear_error() -> None:
    """Needs no Redis: the error names the store (never its password) and says what to do."""
    url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    limiter = RedisRateLimiter(url, "modelyard-test:unreachable", timeout_s=0.2)
    try:
        with pytest.raises(RateLimitBackendError) as caught:
            await limiter.acquire([rpm(5)])
        message = str(caught.value)
        assert "127.0.0.1" in message and "check that Redis is running" in message
        assert "hunter2" not in message
        assert isinstance(caught.value, GatewayError) and caught.value.status == 503
        await limiter.adjust(LimitCheck("key", "k1", "tpm", 10, 5), -5, at=0.0)  # queued, not sent
        with pytest.raises(RateLimitBackendError):
            await limiter.flush()
        with pytest.raises(RateLimitBackendError):
            await limiter.ping()
    finally:
        await limiter.aclose()


async def test_a_silent_redis_times_out_as_a_backend_error() -> None:
    """A server that accepts and never answers: the command timeout ends it, as a backend error."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", "modelyard-test:silent", timeout_s=0.2)
    try:
        with pytest.raises(RateLimitBackendError, match="Timeout"):
            await asyncio.wait_for(limiter.acquire([rpm(5)]), timeout=5)
    finally:
        await limiter.aclose()
        listener.close()
