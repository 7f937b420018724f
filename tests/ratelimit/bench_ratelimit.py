"""Micro-benchmark of the rate limiters: µs per ``acquire`` (not a test; pytest does not collect it).

    .venv/bin/python -m tests.ratelimit.bench_ratelimit [--redis-only] [redis://127.0.0.1:6379/0]

A request carries three checks (key RPM, key TPM, team TPM), the gateway's usual shape. For Redis it
also times a bare PING on the same client: one ``acquire`` should cost about one round trip.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import redis

from modelyard.policy.ratelimit import (
    LimitCheck,
    MemoryRateLimiter,
    RateLimitBackendError,
    RateLimiter,
    RedisRateLimiter,
)

BIG = 10**12


def request(key: str, team: str, rpm: int = BIG) -> list[LimitCheck]:
    return [
        LimitCheck("key", key, "rpm", rpm, 1),
        LimitCheck("key", key, "tpm", BIG, 1200),
        LimitCheck("team", team, "tpm", BIG, 1200),
    ]


async def per_call_us(call: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(min(n // 10, 1000)):
        await call()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def concurrent_us(call: Callable[[], Awaitable[object]], n: int, clients: int) -> float:
    async def client() -> None:
        for _ in range(n // clients):
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return (time.perf_counter() - start) / n * 1e6


async def bench_memory() -> None:
    limiter = MemoryRateLimiter()
    admitted = request("k1", "t1")
    rejected = request("k2", "t1", rpm=0)
    keys = [request(f"k{i}", f"t{i % 50}") for i in range(10_000)]
    index = iter(range(10**9))
    print(
        "memory, 3 checks, admitted:        %6.2f µs"
        % await per_call_us(lambda: limiter.acquire(admitted), 200_000)
    )
    print(
        "memory, 3 checks, rejected:        %6.2f µs"
        % await per_call_us(lambda: limiter.acquire(rejected), 200_000)
    )
    print(
        "memory, 3 checks, 10,000 keys:     %6.2f µs"
        % await per_call_us(lambda: limiter.acquire(keys[next(index) % 10_000]), 200_000)
    )
    print(
        "memory, 1 check:                   %6.2f µs"
        % await per_call_us(lambda: limiter.acquire(admitted[:1]), 200_000)
    )
    start = time.perf_counter()
    for _ in range(200_000):
        limiter.acquire_nowait(admitted, time.monotonic())
    print("memory, 3 checks, acquire_nowait:  %6.2f µs" % ((time.perf_counter() - start) / 200_000 * 1e6))


async def request_cost_us(
    limiter: RateLimiter, reqs: list[list[LimitCheck]], clients: int
) -> tuple[float, float]:
    """(CPU µs, wall µs) of this process per request: acquire, then settle both TPM checks (as
    Admission does), from ``clients`` concurrent clients; pending settlements are flushed in the time."""

    async def client(mine: list[list[LimitCheck]]) -> None:
        for checks in mine:
            decision = await limiter.acquire(checks)
            for check in checks[1:]:
                await limiter.adjust(check, -600, at=decision.at)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(reqs[c::clients]) for c in range(clients)))
    flush = getattr(limiter, "flush", None)  # older limiters wrote each settlement at once
    if flush is not None:
        await flush()
    n = len(reqs)
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def bench_redis(url: str) -> None:
    prefix = f"modelyard-bench:{uuid.uuid4().hex[:8]}"
    try:
        async with RedisRateLimiter(url, prefix) as limiter:
            admitted = request("k1", "t1")
            rejected = request("k2", "t1", rpm=0)
            await limiter.acquire(admitted)
            client = limiter._redis
            print("redis, PING round trip:            %6.1f µs" % await per_call_us(client.ping, 5_000))
            print(
                "redis, 3 checks, admitted:         %6.1f µs"
                % await per_call_us(lambda: limiter.acquire(admitted), 5_000)
            )
            print(
                "redis, 3 checks, rejected:         %6.1f µs"
                % await per_call_us(lambda: limiter.acquire(rejected), 5_000)
            )
            print(
                "redis, 1 check:                    %6.1f µs"
                % await per_call_us(lambda: limiter.acquire(admitted[:1]), 5_000)
            )
            print(
                "redis, 3 checks, 32 concurrent:    %6.1f µs/acquire (throughput)"
                % await concurrent_us(lambda: limiter.acquire(admitted), 20_000, 32)
            )
            for clients in (1, 16, 64):
                reqs = [request(f"k{i % 200}", f"t{i % 20}") for i in range(10_000)]
                try:
                    cpu_us, wall_us = await request_cost_us(limiter, reqs, clients)
                except RateLimitBackendError as exc:
                    print(f"redis, acquire + 2 settlements, {clients:2d} clients: failed: {exc}")
                    continue
                print(
                    f"redis, acquire + 2 settlements, {clients:2d} clients: {cpu_us:6.1f} µs CPU, "
                    f"{wall_us:6.1f} µs wall per request"
                )
    finally:
        sync = redis.Redis.from_url(url)
        for key in sync.scan_iter(match=f"{prefix}:*"):
            sync.delete(key)
        sync.close()


async def main() -> None:
    if "--redis-only" not in sys.argv:
        await bench_memory()
    urls = [a for a in sys.argv[1:] if not a.startswith("--")]
    url = urls[0] if urls else os.environ.get("MODELYARD_TEST_REDIS_URL")
    if url:
        await bench_redis(url)
    else:
        print("redis: skipped (pass a URL or set MODELYARD_TEST_REDIS_URL)")


if __name__ == "__main__":
    asyncio.run(main())
