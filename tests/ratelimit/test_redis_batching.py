"""The Redis limiter's group commit against a real Redis: concurrent acquires share EVALSHA calls
(counted on the wire), limits stay exact across two limiters, settlements are batched yet never lost,
and an outage fails every request of a batch quickly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from modelyard.policy.ratelimit import LimitCheck, RateLimitBackendError, RedisRateLimiter
from tests.ratelimit.conftest import LimiterFactory


def rpm(limit: int, scope_id: str = "k1") -> LimitCheck:
    return LimitCheck("key", scope_id, "rpm", limit, 1)


def tpm(limit: int, cost: int, scope_id: str = "k1") -> LimitCheck:
    return LimitCheck("key", scope_id, "tpm", limit, cost)


def count_evalsha(limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wraps the limiter's Redis client: returns a list holding the EVALSHA commands sent so far."""
    client = limiter._redis
    original = client.evalsha
    sent = [0]

    async def evalsha(*args: Any) -> Any:
        sent[0] += 1
        return await original(*args)

    monkeypatch.setattr(client, "evalsha", evalsha)
    return sent


def commandstats_evalsha(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def total(client: redis.Redis, limiter: RedisRateLimiter, check: LimitCheck) -> int:
    value = client.hget(f"{limiter.prefix}:{check.kind}:{check.scope}:{check.scope_id}:h", "n")
    return int(value or 0)


async def test_64_concurrent_acquires_share_a_few_calls(
    make_redis: LimiterFactory, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_redis()
    assert isinstance(limiter, RedisRateLimiter)
    await limiter.acquire([rpm(10**6, "warm")])  # connect and load the script
    sent = count_evalsha(limiter, monkeypatch)
    server_before = commandstats_evalsha(redis_client)
    checks = [rpm(40), tpm(10**6, 100), LimitCheck("team", "t1", "tpm", 10**6, 100)]
    decisions = await asyncio.gather(*(limiter.acquire(checks) for _ in range(64)))
    assert sum(d.allowed for d in decisions) == 40  # exact: increment on check, in order
    assert all(d.violated == checks[0] for d in decisions if not d.allowed)
    assert sent[0] <= 4, f"{sent[0]} EVALSHA calls for 64 concurrent acquires"
    # The server saw no more than that from us (other clients may share this Redis: at least ours).
    assert commandstats_evalsha(redis_client) - server_before >= sent[0]
    assert total(redis_client, limiter, checks[1]) == 40 * 100


async def test_one_at_a_time_each_acquire_is_one_call(
    make_redis: LimiterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_redis()
    assert isinstance(limiter, RedisRateLimiter)
    await limiter.acquire([rpm(10**6, "warm")])  # connect and load the script
    sent = count_evalsha(limiter, monkeypatch)
    for i in range(10):
        assert (await limiter.acquire([rpm(100)])).allowed
        assert sent[0] == i + 1


async def test_limits_stay_exact_across_two_limiters_under_concurrency(make_redis: LimiterFactory) -> None:
    one, two = make_redis(), make_redis()
    checks = [rpm(150), LimitCheck("team", "t", "rpm", 10**6, 1)]
    for _ in range(3):
        results = await asyncio.gather(*(limiter.acquire(checks) for limiter in [one, two] * 100))
        assert sum(d.allowed for d in results) == (150 if _ == 0 else 0)
    assert isinstance(one, RedisRateLimiter) and isinstance(two, RedisRateLimiter)
    assert one.calls + two.calls < 600 / 4


async def test_a_settlement_rides_with_the_next_acquire(
    make_redis: LimiterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_redis(settle_delay_s=10.0)
    assert isinstance(limiter, RedisRateLimiter)
    reservation = tpm(1000, 900)
    decision = await limiter.acquire([reservation])
    sent = count_evalsha(limiter, monkeypatch)
    for _ in range(4):
        await limiter.adjust(reservation, -100, at=decision.at)
    assert sent[0] == 0  # nothing sent yet
    assert (await limiter.acquire([tpm(1000, 500)])).allowed  # sees the 400 given back
    assert sent[0] == 1


async def test_a_settlement_reaches_other_processes_within_the_delay(
    make_redis: LimiterFactory, redis_client: redis.Redis
) -> None:
    limiter = make_redis(settle_delay_s=0.03)
    other = make_redis()
    assert isinstance(limiter, RedisRateLimiter)
    reservation = tpm(1000, 1000)
    decision = await limiter.acquire([reservation])
    assert not (await other.acquire([tpm(1000, 600)])).allowed
    await limiter.adjust(reservation, -700, at=decision.at)
    await asyncio.sleep(0.15)  # the delay + a round trip, with scheduling slack
    assert total(redis_client, limiter, reservation) == 300
    assert (await other.acquire([tpm(1000, 600)])).allowed


async def test_settlements_are_written_on_close(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    limiter = RedisRateLimiter(redis_url, redis_prefix, settle_delay_s=60.0)
    check = tpm(10_000, 5000)
    decisions = [await limiter.acquire([check]) for _ in range(2)]
    for decision in decisions:
        await limiter.adjust(check, -1234, at=decision.at)
    assert total(redis_client, limiter, check) == 10_000
    await limiter.aclose()
    assert total(redis_client, limiter, check) == 10_000 - 2 * 1234


async def test_many_settlements_under_load_all_land(
    make_redis: LimiterFactory, redis_client: redis.Redis
) -> None:
    """200 requests over 8 clients, each reserving 100 and settling to 30: the counter ends at 6,000."""
    limiter = make_redis(settle_delay_s=0.02)
    assert isinstance(limiter, RedisRateLimiter)
    check = tpm(10**9, 100)

    async def client() -> None:
        for _ in range(25):
            decision = await limiter.acquire([check])
            assert decision.allowed
            await asyncio.sleep(0)
            await limiter.adjust(check, -70, at=decision.at)

    await asyncio.gather(*(client() for _ in range(8)))
    await limiter.flush()
    assert total(redis_client, limiter, check) == 200 * 30
    assert limiter.calls < 200 + 200  # fewer calls than one per acquire and one per settlement


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield int(listener.getsockname()[1])
    listener.close()


async def test_an_outage_fails_every_request_of_every_batch_quickly(silent_port: int) -> None:
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{silent_port}/0", "modelyard-test:silent", timeout_s=0.2)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.wait_for(
            asyncio.gather(*(limiter.acquire([rpm(5)]) for _ in range(32)), return_exceptions=True),
            timeout=5,
        )
        elapsed = loop.time() - started
        assert all(isinstance(r, RateLimitBackendError) for r in results), results
        assert all("check that Redis is running" in str(r) for r in results)
        assert elapsed < 1.5, f"took {elapsed:.2f} s: a batch waited more than ~2 command timeouts"
        assert limiter.calls == 2  # the first alone, the other 31 together
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_fails_a_batch_and_drops_its_settlements(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # free now; nothing listens on it
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", "modelyard-test:down", timeout_s=0.2)
    try:
        await limiter.adjust(tpm(10, 5), -5, at=0.0)
        results = await asyncio.wait_for(
            asyncio.gather(*(limiter.acquire([rpm(5)]) for _ in range(8)), return_exceptions=True),
            timeout=5,
        )
        assert all(isinstance(r, RateLimitBackendError) for r in results), results
        assert "1 pending token settlement(s) dropped" in caplog.text
    finally:
        await limiter.aclose()  # nothing pending: closes cleanly
