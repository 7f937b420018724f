"""Rate-limit leases (:class:`LeasedRateLimiter`) on a real Redis: C4 and C5 with two OS processes
admitting from leases, windows that roll over while leases are held, and what a lease does to the
requests around it (few Redis calls, exact refusals at the limit, a bounded hold on another
process's capacity, TPM give-backs, cancellation and a Redis that is away).

Window checks use each admission's wall-clock time (``time.time()`` when the decision came back;
Redis's clock is this host's): a leased admission's ``Decision.at`` is its lease's grant time,
earlier than the admission itself, so only the wall time shows a lease never admits late.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from modelyard.policy.ratelimit import LimitCheck, RateLimitBackendError, RedisRateLimiter
from modelyard.policy.ratelimit_leases import LeasedRateLimiter
from tests.ratelimit import _load
from tests.ratelimit._load import C4_LIMIT, C4_REQUESTS, C5_LIMIT, C5_MAX_TOKENS
from tests.ratelimit.test_load import most_in_any_window, run_processes

SLACK_S = 0.02
"""A wall time is taken after the decision: allow this much measuring delay in window checks."""

Make = Callable[..., LeasedRateLimiter]


@pytest.fixture
async def make_leased(redis_url: str, redis_prefix: str) -> AsyncIterator[Make]:
    """Builds leased limiters on this test's prefix (``max_age_s``, ``window_s``, ...)."""
    made: list[LeasedRateLimiter] = []

    def make(max_age_s: float = 0.5, **kwargs: object) -> LeasedRateLimiter:
        limiter = LeasedRateLimiter(RedisRateLimiter(redis_url, redis_prefix, **kwargs), max_age_s=max_age_s)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


def counted(client: redis.Redis, prefix: str, check: LimitCheck) -> int:
    """What Redis counts in ``check``'s window now (live buckets; nothing expires in these tests)."""
    value = client.hget(f"{prefix}:{check.kind}:{check.scope}:{check.scope_id}:h", "n")
    return int(value or 0)


def rpm(limit: int, scope_id: str = "k1") -> LimitCheck:
    return LimitCheck("key", scope_id, "rpm", limit, 1)


# --------------------------------------------------------------------------------------------------
# C4 / C5 with leases, two OS processes


def test_c4_from_leases_in_two_processes(redis_url: str, redis_prefix: str) -> None:
    """C4 with leases: RPM 100 per 3-s window, 1,000 requests over 2.4 s from 32 clients in 2
    processes, each admitting from 0.5-s leases: admitted ∈ [100, 102], and no window of wall-clock
    admission times holds more than 100."""
    window_s = 3.0
    shares = run_processes(
        _load.c4_process, [(redis_url, redis_prefix, window_s, process, 0.5) for process in (0, 1)]
    )
    results = [result for share in shares for result in share]
    assert len(results) == C4_REQUESTS
    admitted = [(wall, 1) for allowed, _, _, wall in results if allowed]
    assert C4_LIMIT <= len(admitted) <= C4_LIMIT + 2, f"admitted {len(admitted)} of limit {C4_LIMIT}"
    assert most_in_any_window(admitted, window_s - SLACK_S) <= C4_LIMIT
    for allowed, _, retry_after_s, _ in results:
        if not allowed:
            assert 0 < retry_after_s <= window_s + 0.5 + 0.1  # + a lease's hold, + a bucket's lateness


def test_c4_from_leases_across_windows(redis_url: str, redis_prefix: str) -> None:
    """Leases held while the window rolls over: RPM 100 per 1-s window, 1,000 requests over 2.5
    windows in 2 processes, 0.25-s leases. No 1-s window of wall-clock admissions holds more than
    100 (a lease's admissions leave the window only after the lease has ended), and the limit is
    used again in each new window (≥ 200 admitted)."""
    window_s = 1.0
    shares = run_processes(
        _load.c4_process,
        [(redis_url, redis_prefix, window_s, process, 0.25, 2.5) for process in (0, 1)],
    )
    admitted = [(wall, 1) for share in shares for allowed, _, _, wall in share if allowed]
    assert most_in_any_window(admitted, window_s - SLACK_S) <= C4_LIMIT
    assert len(admitted) >= 2 * C4_LIMIT, f"only {len(admitted)} admitted over 2.5 windows"


def test_slowly_used_leases_never_let_an_admission_leave_the_window_early(
    redis_url: str, redis_prefix: str
) -> None:
    """Leases used slowly, then a rush: RPM 40 per 1-s window, 0.5-s leases, 2 processes each
    sending 24 requests/s for 1 s (so each lease of 5 is used over 0.2 s), then 300/s for 2 s (so
    any slot that frees is taken at once). A lease counts in Redis as if admitted when its age ends,
    so no 1-s window of wall-clock admissions holds more than 40. (Counted at its grant instead, its
    slots would free a lease's age early and the rush would take them again: 44 in one window.)"""
    window_s, limit = 1.0, 40
    phases = [(1.0, 24.0), (2.0, 300.0)]
    shares = run_processes(
        _load.open_loop_process,
        [(redis_url, redis_prefix, window_s, 0.5, limit, phases) for _ in (0, 1)],
    )
    admitted = [(wall, 1) for share in shares for allowed, wall in share if allowed]
    most = most_in_any_window(admitted, window_s - SLACK_S)
    assert most <= limit, f"{most} admitted in one window, limit {limit}"
    assert len(admitted) >= 2 * limit, f"only {len(admitted)} admitted over 3 windows"


def test_c5_from_leases_in_two_processes(redis_url: str, redis_prefix: str) -> None:
    """C5 with leases: TPM 3,000 per 1.5-s window, 16 clients in 2 processes for 3 s, settling to
    actual tokens; the actual tokens admitted in any window (by wall time) stay ≤ the limit, and
    give-backs still admit more than reservations alone would."""
    window_s, run_s = 1.5, 3.0
    shares = run_processes(
        _load.c5_process,
        [(redis_url, redis_prefix, window_s, run_s, seed, 0.5) for seed in (1, 2)],
    )
    admitted = [item for share in shares for item in share]
    settled = [(wall, actual) for _, _, actual, wall in admitted]
    most = most_in_any_window(settled, window_s - SLACK_S)
    assert most <= C5_LIMIT, f"{most} tokens in one window, limit {C5_LIMIT}"
    span_s = max(wall for *_, wall in admitted) - min(wall for *_, wall in admitted)
    reservations_only = int((span_s // window_s + 1) * (C5_LIMIT // (20 + C5_MAX_TOKENS)))
    assert len(admitted) > reservations_only, (len(admitted), reservations_only)


# --------------------------------------------------------------------------------------------------
# One process


async def test_steady_traffic_makes_few_redis_calls(make_leased: Make) -> None:
    """400 requests one after another on a key with RPM and TPM limits: a handful of leases, each one
    Redis call, instead of 400 calls; every admission counted in Redis once the leases close."""
    limiter = make_leased()
    checks = [rpm(1_000_000), LimitCheck("key", "k1", "tpm", 10_000_000, 300)]
    for _ in range(400):
        assert (await limiter.acquire(checks)).allowed
    assert limiter.calls <= 8, limiter.calls
    assert limiter.leases_taken == limiter.calls


async def test_no_request_waits_for_a_lease_in_steady_traffic(make_leased: Make) -> None:
    """A request every 5 ms for 1.2 s with 0.2-s leases: each next lease is taken in the background
    before the current one ends, so only the very first request waits for Redis."""
    limiter = make_leased(max_age_s=0.2)
    checks = [rpm(1_000_000), LimitCheck("key", "k1", "tpm", 10_000_000, 300)]
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert (await limiter.acquire(checks)).allowed
        await asyncio.sleep(0.005)
    assert limiter.leases_taken >= 5
    assert limiter.waits == 1, f"{limiter.waits} requests waited for a lease"


async def test_counts_are_exact_once_leases_close(
    make_leased: Make, redis_client: redis.Redis, redis_prefix: str
) -> None:
    limiter = make_leased()
    checks = [rpm(1_000_000), LimitCheck("key", "k1", "tpm", 10_000_000, 300)]
    for _ in range(57):
        assert (await limiter.acquire(checks)).allowed
    await limiter.flush()
    assert counted(redis_client, redis_prefix, checks[0]) == 57
    assert counted(redis_client, redis_prefix, checks[1]) == 57 * 300


async def test_a_lease_shrinks_to_the_limit_and_refusals_are_exact(
    make_leased: Make, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """RPM 100 (leases of up to 12): exactly 100 admitted from a dozen leases, the last one cut to
    what was left; then refusals with a Retry-After from Redis, each a Redis call of its own (the
    refused key goes per request)."""
    limiter = make_leased(window_s=30.0)
    decisions = [await limiter.acquire([rpm(100)]) for _ in range(100)]
    assert all(d.allowed for d in decisions)
    assert limiter.calls <= 2 * (100 // 12 + 3), limiter.calls  # leases, taken ahead or not
    await limiter.flush()
    calls = limiter.calls
    refused = [await limiter.acquire([rpm(100)]) for _ in range(3)]
    assert not any(d.allowed for d in refused)
    assert all(0 < d.retry_after_s <= 30.0 + 0.5 + 1 for d in refused)
    assert refused[0].violated == rpm(100)
    assert limiter.calls == calls + 3
    await limiter.flush()
    assert counted(redis_client, redis_prefix, rpm(100)) == 100


async def test_capacity_held_by_one_process_refuses_another_only_until_its_lease_ends(
    make_leased: Make,
) -> None:
    """A takes a lease (4 of RPM 80) and admits 1; B then gets the other 76 and is refused. Once
    A's lease ends (0.3 s) its 3 unused come back and B gets exactly them: 80 in all."""
    a, b = make_leased(max_age_s=0.3, window_s=30.0), make_leased(max_age_s=0.3, window_s=30.0)
    assert (await a.acquire([rpm(80)])).allowed
    admitted_b = 0
    while (await b.acquire([rpm(80)])).allowed:
        admitted_b += 1
    assert admitted_b == 76
    refused_at = time.monotonic()
    while not (await b.acquire([rpm(80)])).allowed:
        assert time.monotonic() - refused_at < 0.3 + 0.3, "A's unused capacity was not given back"
        await asyncio.sleep(0.01)
    admitted_b += 1
    while (await b.acquire([rpm(80)])).allowed:
        admitted_b += 1
    assert 1 + admitted_b == 80


async def test_tpm_give_backs_refill_the_open_lease(
    make_leased: Make, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """Unused reserved tokens go back into the open lease (no Redis call) and count in Redis only
    as the actual tokens once it closes; an overrun is added the same way."""
    limiter = make_leased()
    check = LimitCheck("key", "k1", "tpm", 1_000_000, 1000)
    one = await limiter.acquire([check])
    two = await limiter.acquire([check])
    calls = limiter.calls
    await limiter.adjust(check, -700, one.at)  # used 300 of 1,000
    await limiter.adjust(check, 250, two.at)  # overran: 1,250
    assert limiter.calls == calls
    await limiter.flush()
    assert counted(redis_client, redis_prefix, check) == 300 + 1250
    await limiter.adjust(check, -50, two.at)  # after the lease closed: straight to Redis
    await limiter.flush()
    assert counted(redis_client, redis_prefix, check) == 300 + 1200


async def test_a_changed_limit_takes_a_new_lease(make_leased: Make) -> None:
    limiter = make_leased()
    assert (await limiter.acquire([rpm(1000)])).allowed
    assert limiter.leases_taken == 1
    assert (await limiter.acquire([rpm(2000)])).allowed
    assert limiter.leases_taken == 2


async def test_concurrent_requests_share_one_lease_call(make_leased: Make) -> None:
    """64 requests at once on a new key: they wait for one lease call rather than each making one."""
    limiter = make_leased()
    results = await asyncio.gather(*(limiter.acquire([rpm(1_000_000)]) for _ in range(64)))
    assert all(d.allowed for d in results)
    assert limiter.calls <= 8, limiter.calls


async def test_a_cancelled_lease_call_gives_its_grant_back(
    make_leased: Make, redis_client: redis.Redis, redis_prefix: str
) -> None:
    limiter = make_leased()
    task = asyncio.create_task(limiter.acquire([rpm(1000)]))
    await asyncio.sleep(0)  # the call is on its way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    await limiter.flush()
    assert counted(redis_client, redis_prefix, rpm(1000)) == 0
    assert (await limiter.acquire([rpm(1000)])).allowed  # and the next request leases afresh


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_fails_every_waiter_at_once() -> None:
    """Redis away: the request that takes the lease and every request waiting on it get a clear
    RateLimitBackendError from that one attempt (no queue of timeouts)."""
    limiter = LeasedRateLimiter(RedisRateLimiter(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.3))
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(limiter.acquire([rpm(100)]) for _ in range(16)), return_exceptions=True
        )
    finally:
        await limiter.aclose()
    assert all(isinstance(r, RateLimitBackendError) for r in results), results
    assert "Redis" in str(results[0])
    assert time.monotonic() - started < 2.0
