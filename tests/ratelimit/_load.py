"""Load generators for the C4 and C5 rows: run in-process, or in OS processes started with *spawn*.

Each function runs one process's share of clients and returns (or puts on a queue) what each
admitted request recorded, so the test can check the whole run against the limiter's own clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelyard.policy.ratelimit import LimitCheck, RateLimiter, RedisRateLimiter
from modelyard.policy.ratelimit_leases import LeasedRateLimiter

C4_LIMIT = 100
C4_REQUESTS = 1000
C4_CLIENTS = 32

C5_LIMIT = 3000
C5_MAX_TOKENS = 200


async def c4_clients(
    limiter: RateLimiter, *, process: int, processes: int, clients: int, spread_s: float
) -> list[tuple[bool, float, float, float]]:
    """This process's share of C4: request ``j`` (of 1,000, every ``processes``-th one here) fires
    at ``j * spread_s / 1000`` s, from one of ``clients`` concurrent clients. Returns
    (allowed, at, retry_after_s, wall) per request: ``wall`` is ``time.time()`` when the decision
    came (Redis's clock is this host's, so it compares with ``at``; a leased admission's ``at`` is
    its lease's grant time)."""
    check = LimitCheck("key", "c4", "rpm", C4_LIMIT, 1)
    mine = list(range(process, C4_REQUESTS, processes))
    start = time.monotonic()
    results: list[tuple[bool, float, float, float]] = []

    async def client(requests: list[int]) -> None:
        for j in requests:
            delay = start + j * spread_s / C4_REQUESTS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            decision = await limiter.acquire([check])
            results.append((decision.allowed, decision.at, decision.retry_after_s, time.time()))

    await asyncio.gather(*(client(mine[c::clients]) for c in range(clients)))
    return results


async def open_loop(
    limiter: RateLimiter, *, limit: int, phases: Sequence[tuple[float, float]]
) -> list[tuple[bool, float]]:
    """Requests against one RPM ``limit`` fired at a steady rate per phase — ``phases`` is
    (seconds, requests/s) in turn — each from its own task (open loop: a slow answer does not slow
    the load). Returns (allowed, wall) per request."""
    check = LimitCheck("key", "open", "rpm", limit, 1)
    results: list[tuple[bool, float]] = []

    async def one() -> None:
        decision = await limiter.acquire([check])
        results.append((decision.allowed, time.time()))

    tasks = []
    start = time.monotonic()
    for seconds, rate_per_s in phases:
        for j in range(round(rate_per_s * seconds)):
            delay = start + j / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        start += seconds
    await asyncio.gather(*tasks)
    return results


async def c5_clients(
    limiter: RateLimiter, *, clients: int, run_s: float, seed: int
) -> list[tuple[float, int, int, float]]:
    """This process's share of C5: each client loops until ``run_s`` has passed, reserving
    prompt estimate + ``max_tokens``; an admitted request "streams" for up to 150 ms, then settles
    to its actual tokens (prompt ≤ estimate, completion ≤ max_tokens / 2). A rejected client waits
    ``min(retry_after_s, 50 ms)``. Returns (at, reserved, actual, wall) per admitted request, ``wall``
    being ``time.time()`` at admission (see :func:`c4_clients`)."""
    rng = random.Random(seed)
    deadline = time.monotonic() + run_s
    admitted: list[tuple[float, int, int, float]] = []

    async def client(name: str) -> None:
        while time.monotonic() < deadline:
            estimate = rng.randint(20, 200)
            reserved = estimate + C5_MAX_TOKENS
            check = LimitCheck("key", "c5", "tpm", C5_LIMIT, reserved)
            decision = await limiter.acquire([check, LimitCheck("client", name, "rpm", 10**6, 1)])
            if not decision.allowed:
                await asyncio.sleep(min(decision.retry_after_s, 0.05))
                continue
            wall = time.time()
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            actual = rng.randint(estimate // 2, estimate) + rng.randint(0, C5_MAX_TOKENS // 2)
            await limiter.adjust(check, actual - reserved, at=decision.at)
            admitted.append((decision.at, reserved, actual, wall))

    await asyncio.gather(*(client(f"{seed}-{c}") for c in range(clients)))
    return admitted


def _process_main(
    queue: Any,
    barrier: Any,
    url: str,
    prefix: str,
    window_s: float,
    run: Callable[[RateLimiter], Any],
    lease_age_s: float | None = None,
) -> None:
    async def main() -> Any:
        limiter: RateLimiter = RedisRateLimiter(url, prefix, window_s=window_s, max_connections=32)
        if lease_age_s is not None:
            limiter = LeasedRateLimiter(limiter, max_age_s=lease_age_s)  # type: ignore[arg-type]
        async with limiter:
            await limiter.acquire([LimitCheck("warmup", "w", "rpm", 10**9, 0)])  # connect, load
            await asyncio.to_thread(barrier.wait, 60)  # both processes start together
            result = await run(limiter)
            await limiter.flush()
            return result

    try:
        queue.put(("ok", asyncio.run(main())))
    except BaseException as exc:
        queue.put(("error", repr(exc)))
        raise


def c4_process(
    queue: Any,
    barrier: Any,
    url: str,
    prefix: str,
    window_s: float,
    process: int,
    lease_age_s: float | None = None,
    spread_windows: float = 0.8,
) -> None:
    """Entry point of one C4 process: 16 clients, half the requests, over ``spread_windows`` windows
    (0.8: the row itself), from leases of ``lease_age_s`` when given."""
    _process_main(
        queue,
        barrier,
        url,
        prefix,
        window_s,
        lambda limiter: c4_clients(
            limiter,
            process=process,
            processes=2,
            clients=C4_CLIENTS // 2,
            spread_s=spread_windows * window_s,
        ),
        lease_age_s,
    )


def c5_process(
    queue: Any,
    barrier: Any,
    url: str,
    prefix: str,
    window_s: float,
    run_s: float,
    seed: int,
    lease_age_s: float | None = None,
) -> None:
    """Entry point of one C5 process: 8 clients for ``run_s`` seconds (from leases when given)."""
    _process_main(
        queue,
        barrier,
        url,
        prefix,
        window_s,
        lambda limiter: c5_clients(limiter, clients=8, run_s=run_s, seed=seed),
        lease_age_s,
    )


def open_loop_process(
    queue: Any,
    barrier: Any,
    url: str,
    prefix: str,
    window_s: float,
    lease_age_s: float | None,
    limit: int,
    phases: Sequence[tuple[float, float]],
) -> None:
    """Entry point of one :func:`open_loop` process."""
    _process_main(
        queue,
        barrier,
        url,
        prefix,
        window_s,
        lambda limiter: open_loop(limiter, limit=limit, phases=phases),
        lease_age_s,
    )
