"""Load generators for the C4 and C5 rows: run in-process, or in OS processes started with *spawn*.

Each function runs one process's share of clients and returns (or puts on a queue) what each
admitted request recorded, so the test can check the whole run against the limiter's own clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from modelyard.policy.ratelimit import LimitCheck, RateLimiter, RedisRateLimiter

C4_LIMIT = 100
C4_REQUESTS = 1000
C4_CLIENTS = 32

C5_LIMIT = 3000
C5_MAX_TOKENS = 200


async def c4_clients(
    limiter: RateLimiter, *, process: int, processes: int, clients: int, spread_s: float
) -> list[tuple[bool, float, float]]:
    """This process's share of C4: request ``j`` (of 1,000, every ``processes``-th one here) fires
    at ``j * spread_s / 1000`` s, from one of ``clients`` concurrent clients. Returns
    (allowed, at, retry_after_s) per request."""
    check = LimitCheck("key", "c4", "rpm", C4_LIMIT, 1)
    mine = list(range(process, C4_REQUESTS, processes))
    start = time.monotonic()
    results: list[tuple[bool, float, float]] = []

    async def client(requests: list[int]) -> None:
        for j in requests:
            delay = start + j * spread_s / C4_REQUESTS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            decision = await limiter.acquire([check])
            results.append((decision.allowed, decision.at, decision.retry_after_s))

    await asyncio.gather(*(client(mine[c::clients]) for c in range(clients)))
    return results


async def c5_clients(
    limiter: RateLimiter, *, clients: int, run_s: float, seed: int
) -> list[tuple[float, int, int]]:
    """This process's share of C5: each client loops until ``run_s`` has passed, reserving
    prompt estimate + ``max_tokens``; an admitted request "streams" for up to 150 ms, then settles
    to its actual tokens (prompt ≤ estimate, completion ≤ max_tokens / 2). A rejected client waits
    ``min(retry_after_s, 50 ms)``. Returns (at, reserved, actual) per admitted request."""
    rng = random.Random(seed)
    deadline = time.monotonic() + run_s
    admitted: list[tuple[float, int, int]] = []

    async def client(name: str) -> None:
        while time.monotonic() < deadline:
            estimate = rng.randint(20, 200)
            reserved = estimate + C5_MAX_TOKENS
            check = LimitCheck("key", "c5", "tpm", C5_LIMIT, reserved)
            decision = await limiter.acquire([check, LimitCheck("client", name, "rpm", 10**6, 1)])
            if not decision.allowed:
                await asyncio.sleep(min(decision.retry_after_s, 0.05))
                continue
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            actual = rng.randint(estimate // 2, estimate) + rng.randint(0, C5_MAX_TOKENS // 2)
            await limiter.adjust(check, actual - reserved, at=decision.at)
            admitted.append((decision.at, reserved, actual))

    await asyncio.gather(*(client(f"{seed}-{c}") for c in range(clients)))
    return admitted


def _process_main(
    queue: Any,
    barrier: Any,
    url: str,
    prefix: str,
    window_s: float,
    run: Callable[[RateLimiter], Any],
) -> None:
    async def main() -> Any:
        async with RedisRateLimiter(url, prefix, window_s=window_s, max_connections=32) as limiter:
            await limiter.acquire([LimitCheck("warmup", "w", "rpm", 10**9, 0)])  # connect, load
            await asyncio.to_thread(barrier.wait, 60)  # both processes start together
            return await run(limiter)

    try:
        queue.put(("ok", asyncio.run(main())))
    except BaseException as exc:
        queue.put(("error", repr(exc)))
        raise


def c4_process(queue: Any, barrier: Any, url: str, prefix: str, window_s: float, process: int) -> None:
    """Entry point of one C4 process: 16 clients, half the requests, over 0.8 windows."""
    _process_main(
        queue,
        barrier,
        url,
        prefix,
        window_s,
        lambda limiter: c4_clients(
            limiter, process=process, processes=2, clients=C4_CLIENTS // 2, spread_s=0.8 * window_s
        ),
    )


def c5_process(
    queue: Any, barrier: Any, url: str, prefix: str, window_s: float, run_s: float, seed: int
) -> None:
    """Entry point of one C5 process: 8 clients for ``run_s`` seconds."""
    _process_main(
        queue,
        barrier,
        url,
        prefix,
        window_s,
        lambda limiter: c5_clients(limiter, clients=8, run_s=run_s, seed=seed),
    )
