"""The sliding window, on both backends, with the clock injected (``now``): limits hold exactly at and
across window edges, all-or-nothing admission, Retry-After, and TPM reservation and settlement.

The Redis runs take ``now`` too (instead of the server's ``TIME``), so the same scenarios check the
Lua script step for step against the in-memory limiter.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from modelyard.policy.ratelimit import (
    MIN_RETRY_AFTER_S,
    LimitCheck,
    MemoryRateLimiter,
    RateLimiter,
)
from tests.ratelimit.conftest import LimiterFactory

T0 = 1_000.0  # an injected clock reading; bucket 1000 of 1 s buckets starts here


def rpm(limit: int, scope_id: str = "k1", scope: str = "key") -> LimitCheck:
    return LimitCheck(scope, scope_id, "rpm", limit, 1)


def tpm(limit: int, cost: int, scope_id: str = "k1", scope: str = "key") -> LimitCheck:
    return LimitCheck(scope, scope_id, "tpm", limit, cost)


async def admitted(limiter: RateLimiter, checks: list[LimitCheck], times: list[float]) -> int:
    count = 0
    for now in times:
        count += (await limiter.acquire(checks, now=now)).allowed
    return count


async def test_admits_exactly_the_limit(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    check = rpm(5)
    for i in range(5):
        decision = await limiter.acquire([check], now=T0 + i)
        assert decision.allowed and decision.violated is None and decision.retry_after_s == 0
        assert decision.at == pytest.approx(T0 + i)
    rejected = await limiter.acquire([check], now=T0 + 10)
    assert not rejected.allowed
    assert rejected.violated == check
    assert rejected.retry_after_s == pytest.approx(50.0)  # the request at T0 leaves at T0 + 60


async def test_window_edge_is_exact(make_limiter: LimiterFactory) -> None:
    """Admitted at T0: still counted at T0 + 59.999, gone at exactly T0 + 60."""
    limiter = make_limiter()
    check = rpm(5)
    assert await admitted(limiter, [check], [T0] * 5) == 5
    assert not (await limiter.acquire([check], now=T0 + 59.999)).allowed
    assert await admitted(limiter, [check], [T0 + 60.0] * 6) == 5


async def test_no_double_limit_across_a_minute_boundary(make_limiter: LimiterFactory) -> None:
    """A fixed window would admit 5 at :59.5 and 5 more at :00.5; the sliding window admits 5."""
    limiter = make_limiter()
    check = rpm(5)
    assert await admitted(limiter, [check], [T0 + 59.5] * 5) == 5
    assert await admitted(limiter, [check], [T0 + 60.5, T0 + 61.0, T0 + 119.4]) == 0
    assert await admitted(limiter, [check], [T0 + 119.5] * 6) == 5


async def test_never_over_the_limit_in_any_window(make_limiter: LimiterFactory) -> None:
    """Random arrivals over 4 windows: no window of 60 s holds more than the limit, and a rejection
    is never more than one bucket (1 s) more conservative than an exact sliding log."""
    limiter = make_limiter()
    check = rpm(10)
    rng = random.Random(7)
    times = sorted(T0 + rng.uniform(0, 240) for _ in range(300))
    admitted_at: list[float] = []
    for now in times:
        decision = await limiter.acquire([check], now=now)
        if decision.allowed:
            admitted_at.append(now)
            assert sum(now - 60 < t <= now for t in admitted_at) <= 10
        else:
            assert sum(now - 61 < t <= now for t in admitted_at) >= 10
    assert len(admitted_at) >= 40  # four windows' worth


async def test_a_rejection_by_one_limit_consumes_no_other(make_limiter: LimiterFactory) -> None:
    """Team limit 3 rejects the key's 4th request; the key's own limit of 10 is left untouched."""
    limiter = make_limiter()
    key, team = rpm(10, "k1"), rpm(3, "t1", scope="team")
    assert await admitted(limiter, [key, team], [T0] * 3) == 3
    rejected = await limiter.acquire([key, team], now=T0 + 1)
    assert not rejected.allowed and rejected.violated == team
    other_team = rpm(100, "t2", scope="team")
    assert await admitted(limiter, [key, other_team], [T0 + 2] * 8) == 7  # 10 - 3, not 10 - 4


async def test_all_or_nothing_for_tokens(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    request = [rpm(100), tpm(1000, 600), tpm(1000, 600, "t1", scope="team")]
    assert (await limiter.acquire(request, now=T0)).allowed
    second = await limiter.acquire(request, now=T0 + 1)
    assert not second.allowed and second.violated == request[1]  # equal waits: the first
    # Nothing of the rejected request was counted: exactly 400 tokens and 99 requests are left.
    assert (await limiter.acquire([rpm(100), tpm(1000, 400)], now=T0 + 2)).allowed
    assert not (await limiter.acquire([tpm(1000, 1)], now=T0 + 2)).allowed
    assert await admitted(limiter, [rpm(100)], [T0 + 3] * 100) == 98


async def test_violated_is_the_check_with_the_longest_wait(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    key, team = rpm(1, "k1"), rpm(1, "t1", scope="team")
    assert (await limiter.acquire([team], now=T0)).allowed
    assert (await limiter.acquire([key], now=T0 + 20)).allowed
    decision = await limiter.acquire([team, key], now=T0 + 30)
    assert not decision.allowed
    assert decision.violated == key  # free at T0 + 80, the team at T0 + 60
    assert decision.retry_after_s == pytest.approx(50.0)


async def test_retry_after_is_when_the_request_fits(make_limiter: LimiterFactory) -> None:
    """Needing more than the oldest bucket: the wait runs to the bucket that frees enough."""
    limiter = make_limiter()
    assert await admitted(limiter, [tpm(100, 40)], [T0, T0 + 10]) == 2
    assert await admitted(limiter, [tpm(100, 20)], [T0 + 20]) == 1
    big = tpm(100, 90)  # needs 90 of the 100 used: the buckets of T0, T0+10 and T0+20
    decision = await limiter.acquire([big], now=T0 + 30)
    assert not decision.allowed and decision.retry_after_s == pytest.approx(50.0)
    assert not (await limiter.acquire([big], now=T0 + 79.99)).allowed
    assert (await limiter.acquire([big], now=T0 + 30 + decision.retry_after_s)).allowed


async def test_retry_after_has_a_floor(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    assert (await limiter.acquire([rpm(1)], now=T0)).allowed
    decision = await limiter.acquire([rpm(1)], now=T0 + 59.999999)
    assert not decision.allowed and decision.retry_after_s == MIN_RETRY_AFTER_S


async def test_a_cost_above_the_limit_never_fits(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    decision = await limiter.acquire([tpm(1000, 1001)], now=T0)
    assert not decision.allowed and decision.retry_after_s == pytest.approx(60.0)
    assert (await limiter.acquire([tpm(1000, 1000)], now=T0)).allowed


async def test_settlement_gives_back_into_the_reserving_bucket(make_limiter: LimiterFactory) -> None:
    """Reserve 600 at T0, use 100: the 500 given back are free at once, and the 100 used leave the
    window with the T0 bucket (at T0 + 60), not with the bucket current at settlement."""
    limiter = make_limiter()
    reservation = tpm(1000, 600)
    first = await limiter.acquire([reservation], now=T0)
    assert not (await limiter.acquire([tpm(1000, 600)], now=T0 + 1)).allowed
    await limiter.adjust(reservation, 100 - 600, at=first.at)
    assert (await limiter.acquire([tpm(1000, 600)], now=T0 + 1)).allowed  # 100 + 600 used
    assert not (await limiter.acquire([tpm(1000, 301)], now=T0 + 59.9)).allowed
    assert (await limiter.acquire([tpm(1000, 300)], now=T0 + 59.9)).allowed  # 1000 used
    assert not (await limiter.acquire([tpm(1000, 1)], now=T0 + 59.95)).allowed
    assert (await limiter.acquire([tpm(1000, 100)], now=T0 + 60)).allowed  # T0's 100 left


async def test_settlement_above_the_reservation_counts_the_excess(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    first = await limiter.acquire([tpm(1000, 300)], now=T0)
    await limiter.adjust(tpm(1000, 300), 200, at=first.at)  # the prompt was longer than estimated
    assert not (await limiter.acquire([tpm(1000, 501)], now=T0 + 1)).allowed
    assert (await limiter.acquire([tpm(1000, 500)], now=T0 + 1)).allowed


async def test_settlement_never_goes_below_zero(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    first = await limiter.acquire([tpm(1000, 300)], now=T0)
    await limiter.adjust(tpm(1000, 300), -5000, at=first.at)
    assert (await limiter.acquire([tpm(1000, 1000)], now=T0 + 1)).allowed
    assert not (await limiter.acquire([tpm(1000, 1)], now=T0 + 1)).allowed


async def test_settlement_after_expiry_changes_nothing(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    first = await limiter.acquire([tpm(1000, 800)], now=T0)
    assert (await limiter.acquire([tpm(1000, 1000)], now=T0 + 60.5)).allowed
    await limiter.adjust(tpm(1000, 800), -800, at=first.at)  # too late: that bucket has gone
    assert not (await limiter.acquire([tpm(1000, 1)], now=T0 + 61)).allowed
    await limiter.adjust(tpm(1000, 1, "nobody"), -10, at=T0)  # an unknown counter: nothing happens


async def test_counters_are_separate(make_limiter: LimiterFactory) -> None:
    """Per kind, scope and id; a ':' in a scope cannot make two counters collide."""
    limiter = make_limiter()
    assert (await limiter.acquire([LimitCheck("a:b", "c", "rpm", 1, 1)], now=T0)).allowed
    assert (await limiter.acquire([LimitCheck("a", "b:c", "rpm", 1, 1)], now=T0)).allowed
    assert (await limiter.acquire([LimitCheck("a:b", "c", "tpm", 1, 1)], now=T0)).allowed
    assert (await limiter.acquire([LimitCheck("a:b", "d", "rpm", 1, 1)], now=T0)).allowed
    assert not (await limiter.acquire([LimitCheck("a:b", "c", "rpm", 1, 1)], now=T0)).allowed


async def test_a_changed_limit_applies_at_once(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    assert await admitted(limiter, [rpm(5)], [T0] * 5) == 5
    assert await admitted(limiter, [rpm(8)], [T0 + 1] * 5) == 3
    assert await admitted(limiter, [rpm(2)], [T0 + 2] * 2) == 0


async def test_a_configurable_window(make_limiter: LimiterFactory) -> None:
    """A 3-second window (50 ms buckets) behaves as the minute does, scaled: C4's 1,000 requests
    spread over 2.4 s admit exactly 100, and 2,500 over 6 s exactly 200 (two windows)."""
    limiter = make_limiter(window_s=3.0)
    check = rpm(100)
    times = [T0 + i * 0.0024 for i in range(2500)]
    admitted_at = []
    for now in times:
        decision = await limiter.acquire([check], now=now)
        if decision.allowed:
            admitted_at.append(now)
            assert sum(now - 3 < t <= now for t in admitted_at) <= 100
        elif now < T0 + 2.4:
            # The first 100 were admitted within 0.24 s; they leave from T0 + 3 on.
            assert now + decision.retry_after_s == pytest.approx(T0 + 3, abs=0.06)
    assert sum(t < T0 + 2.4 for t in admitted_at) == 100
    assert len(admitted_at) == 200


async def test_concurrent_requests_take_exactly_the_limit(make_limiter: LimiterFactory) -> None:
    """200 concurrent acquires against a limit of 50 (real clock): exactly 50 get through."""
    limiter = make_limiter()
    check = rpm(50, "concurrent")
    decisions = await asyncio.gather(*(limiter.acquire([check]) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 50
    assert all(0 < d.retry_after_s <= 60 for d in decisions if not d.allowed)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="limit and cost"):
        LimitCheck("key", "k1", "rpm", 10, -1)
    with pytest.raises(ValueError, match="window_s"):
        MemoryRateLimiter(window_s=0)
    with pytest.raises(ValueError, match="bucket_s"):
        MemoryRateLimiter(window_s=60, bucket_s=61)


async def test_memory_drops_idle_counters() -> None:
    """Bounded memory: counters idle for a window are swept; a busy counter keeps ≤ 61 buckets."""
    limiter = MemoryRateLimiter()
    for i in range(1000):
        assert (await limiter.acquire([rpm(5, f"k{i}")], now=T0)).allowed
    assert len(limiter) == 1000
    for i in range(1000):  # still in use: none is dropped, k0 still counts its request
        assert (await limiter.acquire([rpm(5, f"other{i}")], now=T0 + 59)).allowed
    assert len(limiter) == 2000
    assert await admitted(limiter, [rpm(5, "k0")], [T0 + 59] * 5) == 4
    busy = rpm(10**9, "busy")
    for step in range(2000):
        await limiter.acquire([busy], now=T0 + 120 + step * 0.1)
    assert len(limiter) == 1
    counter = next(iter(limiter._counters.values()))
    assert len(counter.buckets) <= 61


async def test_memory_survives_a_clock_that_steps_back() -> None:
    limiter = MemoryRateLimiter()
    assert (await limiter.acquire([rpm(2)], now=T0 + 5)).allowed
    assert (await limiter.acquire([rpm(2)], now=T0)).allowed  # counted with the newest bucket
    assert not (await limiter.acquire([rpm(2)], now=T0 + 64.9)).allowed
    assert (await limiter.acquire([rpm(2)], now=T0 + 65)).allowed
