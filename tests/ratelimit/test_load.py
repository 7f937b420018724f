"""RELIABILITY.md §5.C rows C4 (RPM under concurrency, several processes) and C5 (TPM reservations
settled to actual tokens), with the window shortened so each runs in seconds.

The counts are the rows' own; only the clock is scaled. The real-time figures: C4 is an RPM limit of
100/min with 1,000 requests over 60 s from 32 clients in 2 processes, admitted ∈ [100, 102]; C5 is
tokens admitted in any minute ≤ the TPM limit + one request's ``max_tokens``.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

from modelyard.policy.ratelimit import MemoryRateLimiter
from tests.ratelimit import _load
from tests.ratelimit._load import C4_CLIENTS, C4_LIMIT, C4_REQUESTS, C5_LIMIT, C5_MAX_TOKENS


def run_processes(target: Callable[..., None], args: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned OS process per ``args`` entry (with a shared barrier); return their results."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(len(args))
    processes = [ctx.Process(target=target, args=(queue, barrier, *a), daemon=True) for a in args]
    for process in processes:
        process.start()
    try:
        outcomes = [queue.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [value for status, value in outcomes if status != "ok"]
    assert not errors, f"a load process failed: {errors}"
    return [value for _, value in outcomes]


def most_in_any_window(events: Sequence[tuple[float, int]], window_s: float) -> int:
    """The largest sum of amounts whose times fall within one half-open window [t, t + window_s)."""
    ordered = sorted(events)
    best = total = start = 0
    for time_s, amount in ordered:
        total += amount
        while ordered[start][0] <= time_s - window_s:
            total -= ordered[start][1]
            start += 1
        best = max(best, total)
    return best


def check_c4(results: Sequence[tuple[bool, float, float, float]], window_s: float) -> None:
    assert len(results) == C4_REQUESTS
    admitted = [(at, 1) for allowed, at, _, _ in results if allowed]
    first = min(at for at, _ in admitted)
    late = max(at for _, at, _, _ in results) - first
    assert late < window_s, f"the load generator fell behind: its last request came {late:.2f} s in"
    assert C4_LIMIT <= len(admitted) <= C4_LIMIT + 2, f"admitted {len(admitted)} of limit {C4_LIMIT}"
    assert most_in_any_window(admitted, window_s) <= C4_LIMIT
    for allowed, at, retry_after_s, _ in results:
        if not allowed:  # Retry-After points at the first admissions leaving the window
            assert 0 < retry_after_s <= window_s
            assert at + retry_after_s >= first + window_s - 1e-6


def check_c5(admitted: Sequence[tuple[float, int, int, float]], window_s: float, span_s: float) -> None:
    settled = [(at, actual) for at, _, actual, _ in admitted]
    most = most_in_any_window(settled, window_s)
    assert most <= C5_LIMIT + C5_MAX_TOKENS, f"{most} tokens in one window, limit {C5_LIMIT}"
    assert most <= C5_LIMIT  # settling never above the reservation: the limit itself holds
    # Giving back unused reservations admits more than reservations alone could.
    reservations_only = math.ceil(span_s / window_s) * (C5_LIMIT // (20 + C5_MAX_TOKENS))
    assert len(admitted) > reservations_only, (len(admitted), reservations_only)


def test_c4_rpm_two_processes_sharing_redis(redis_url: str, redis_prefix: str) -> None:
    """C4: RPM 100 per 3-s window; 1,000 requests spread over 2.4 s from 32 clients (16 in each of
    2 spawned processes) sharing Redis: admitted ∈ [100, 102] and no window holds more than 100.
    (Real time: 100/min, 1,000 requests over 60 s; LiteLLM admitted 544 in #6938.)"""
    window_s = 3.0
    shares = run_processes(
        _load.c4_process, [(redis_url, redis_prefix, window_s, process) for process in (0, 1)]
    )
    check_c4([result for share in shares for result in share], window_s)


async def test_c4_rpm_memory_one_process() -> None:
    """C4 for the in-memory backend (one process): 32 clients, 1,000 requests over 0.8 windows."""
    window_s = 1.0
    limiter = MemoryRateLimiter(window_s=window_s)
    results = await _load.c4_clients(
        limiter, process=0, processes=1, clients=C4_CLIENTS, spread_s=0.8 * window_s
    )
    check_c4(results, window_s)


def test_c5_tpm_two_processes_sharing_redis(redis_url: str, redis_prefix: str) -> None:
    """C5: TPM 3,000 per 1.5-s window, 16 clients in 2 spawned processes for 3 s, each reserving
    prompt estimate + max_tokens (200) and settling to actual tokens after "streaming": the actual
    tokens admitted in any window stay ≤ limit + one max_tokens (here even ≤ limit), and settling
    admits more requests than the reservations alone would. (Real time: tokens admitted per minute.)"""
    window_s, run_s = 1.5, 3.0
    shares = run_processes(
        _load.c5_process, [(redis_url, redis_prefix, window_s, run_s, seed) for seed in (1, 2)]
    )
    admitted = [item for share in shares for item in share]
    span_s = max(at for at, *_ in admitted) - min(at for at, *_ in admitted)
    check_c5(admitted, window_s, span_s)


async def test_c5_tpm_memory_one_process() -> None:
    """C5 for the in-memory backend: 16 clients for 2 s with a 1-s window."""
    window_s = 1.0
    limiter = MemoryRateLimiter(window_s=window_s)
    admitted = await _load.c5_clients(limiter, clients=16, run_s=2.0, seed=3)
    span_s = max(at for at, *_ in admitted) - min(at for at, *_ in admitted)
    check_c5(admitted, window_s, span_s)
