"""Fixtures: the Redis under test (real, or the test skips saying how to run it) and limiter factories.

Redis-backed tests run against ``MODELYARD_TEST_REDIS_URL`` (CI: ``redis://127.0.0.1:6379/0``). Every
test gets its own key prefix under one per-run prefix, and every key under it is deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from modelyard.policy.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

REDIS_URL_ENV = "MODELYARD_TEST_REDIS_URL"
HOW_TO_RUN = (
    f"set {REDIS_URL_ENV}=redis://127.0.0.1:6379/0 to a Redis (6.2+) you can write to, e.g. start one "
    "with `redis-server --port 6379` or `docker run --rm -p 6379:6379 redis:7`"
)
RUN_PREFIX = f"modelyard-test:rl:{uuid.uuid4().hex[:12]}"
_test_numbers = itertools.count()

LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis URL; skips (with how to run these tests) when unset or unreachable."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        pytest.skip(f"Redis-backed rate-limit test: {REDIS_URL_ENV} is not set; {HOW_TO_RUN}")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        where = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()
        pytest.skip(f"Redis-backed rate-limit test: {where} is unreachable ({exc}); {HOW_TO_RUN}")
    try:
        yield url
    finally:
        for key in client.scan_iter(match=f"{RUN_PREFIX}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted when the test ends."""
    prefix = f"{RUN_PREFIX}:{next(_test_numbers)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client for inspecting keys."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def make_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[LimiterFactory]:
    """Builds :class:`RedisRateLimiter` instances on this test's prefix; closes them afterwards."""
    made: list[RateLimiter] = []

    def make(**kwargs: Any) -> RateLimiter:
        limiter = RedisRateLimiter(redis_url, redis_prefix, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> LimiterFactory:
    """Each backend in turn: a factory taking ``window_s`` and ``bucket_s``."""
    if request.param == "memory":
        return lambda **kwargs: MemoryRateLimiter(**kwargs)
    factory: LimiterFactory = request.getfixturevalue("make_redis")
    return factory
