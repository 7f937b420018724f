"""Breaker, retry budget, backoff and balancers: the pure parts of routing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modelyard.providers.fake import FakeProvider
from modelyard.providers.registry import Target
from modelyard.routing.backoff import full_jitter, parse_retry_after
from modelyard.routing.balance import Balancer, Strategy, rendezvous
from modelyard.routing.breaker import BreakerState, CircuitBreaker
from modelyard.routing.deployment import DeploymentPolicy, DeploymentState
from modelyard.routing.retry_budget import RetryBudget


def make_state(label: str, **policy: object) -> DeploymentState:
    target = Target(label, FakeProvider(), "echo", label, False, True, None)
    return DeploymentState(target, DeploymentPolicy(**policy), breaker=CircuitBreaker(), budget=RetryBudget())  # type: ignore[arg-type]


def test_breaker_opens_after_five_consecutive_failures_and_probes_once() -> None:
    breaker = CircuitBreaker(threshold=5, base_open_s=30, max_open_s=300)
    for i in range(4):
        breaker.record_failure(now=i)
    assert breaker.state(4) is BreakerState.CLOSED
    breaker.record_failure(now=4)
    assert breaker.state(5) is BreakerState.OPEN and not breaker.acquire(5)
    # Half-open after 30 s: exactly one probe gets through.
    assert breaker.state(34.1) is BreakerState.HALF_OPEN
    assert breaker.acquire(34.1) and not breaker.acquire(34.2)
    # The probe fails: open again for 2 × 30 s.
    breaker.record_failure(now=35)
    assert breaker.state(35 + 59) is BreakerState.OPEN and breaker.state(35 + 61) is BreakerState.HALF_OPEN
    assert breaker.acquire(96)
    breaker.record_success()
    assert breaker.state(97) is BreakerState.CLOSED and breaker.acquire(97) and breaker.acquire(97)


def test_breaker_open_time_is_capped() -> None:
    breaker = CircuitBreaker(threshold=1, base_open_s=30, max_open_s=60)
    now = 0.0
    for _ in range(5):
        breaker.record_failure(now)
        now += breaker.seconds_until_probe(now) + 0.1
        assert breaker.acquire(now)
    assert breaker.times_opened == 5
    breaker.record_failure(now)
    assert breaker.seconds_until_probe(now) == pytest.approx(60)


def test_success_resets_consecutive_count() -> None:
    breaker = CircuitBreaker(threshold=3)
    for i in range(10):
        breaker.record_failure(i)
        breaker.record_failure(i + 0.5)
        breaker.record_success()
    assert breaker.state(100) is BreakerState.CLOSED


def test_retry_budget_is_twenty_percent_plus_floor() -> None:
    budget = RetryBudget(ratio=0.2, window_s=10, min_per_s=0.3)  # floor: 3 per 10 s window
    for _ in range(100):
        budget.record_first_attempt(0.0)
    allowed = sum(budget.try_spend(1.0) for _ in range(100))
    assert allowed == 20 + 3
    # A timeout costs two.
    budget2 = RetryBudget(ratio=0.0, window_s=10, min_per_s=0.4)
    assert budget2.try_spend(0, timeout=True) and budget2.try_spend(0, timeout=True)
    assert not budget2.try_spend(0, timeout=True)
    # Tokens expire with the window.
    assert budget.try_spend(20.0)


def test_full_jitter_stays_within_bounds() -> None:
    rng = random.Random(1)
    for attempt in range(1, 8):
        cap = min(4.0, 0.25 * 2 ** (attempt - 1))
        delays = [full_jitter(attempt, base_s=0.25, cap_s=4.0, rng=rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > cap * 0.8  # really spread over the range


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2", 0) == 2
    assert parse_retry_after("0.5", 0) == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == pytest.approx(10)
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


def test_p2c_prefers_fast_idle_and_avoids_failing() -> None:
    fast, slow = make_state("fast"), make_state("slow")
    fast.record_latency(0.05)
    slow.record_latency(0.25)
    balancer = Balancer(Strategy.P2C_EWMA, random.Random(3))
    picks = Counter(balancer.choose([fast, slow], now=0).target.label for _ in range(100))
    assert picks["fast"] == 100
    # A fast backend that answers 503 must not look fast: the failure penalty moves traffic away.
    fast.record_failure(now=0, retry_after_s=10)
    picks = Counter(balancer.choose([fast, slow], now=1).target.label for _ in range(100))
    assert picks["slow"] == 100
    # ...and the penalty decays.
    picks = Counter(balancer.choose([fast, slow], now=11).target.label for _ in range(100))
    assert picks["fast"] == 100


def test_p2c_accounts_for_in_flight() -> None:
    a, b = make_state("a"), make_state("b")
    a.record_latency(0.1)
    b.record_latency(0.15)
    a.in_flight = 5
    assert Balancer(Strategy.P2C_EWMA, random.Random(0)).choose([a, b], now=0) is b


def test_other_strategies() -> None:
    states = [
        make_state(n, weight=w, cost_per_mtok=c) for n, w, c in (("a", 1, 5.0), ("b", 3, 1.0), ("c", 0, 2.0))
    ]
    rng = random.Random(7)
    weighted = Counter(Balancer(Strategy.WEIGHTED, rng).choose(states, 0).target.label for _ in range(4000))
    assert weighted["c"] == 0 and 2.6 < weighted["b"] / weighted["a"] < 3.4
    rr = Balancer(Strategy.ROUND_ROBIN)
    assert [rr.choose(states, 0).target.label for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert Balancer(Strategy.LOWEST_COST).choose(states, 0).target.label == "b"
    assert Balancer(Strategy.PRIORITY).choose(states, 0).target.label == "a"
    states[0].in_flight = 2
    states[1].in_flight = 1
    assert Balancer(Strategy.LEAST_OUTSTANDING).choose(states, 0).target.label == "c"


def test_sticky_rendezvous_is_stable_and_spreads() -> None:
    states = [make_state(n) for n in "abcd"]
    owners = {key: rendezvous(states, key).target.label for key in (f"user{i}" for i in range(400))}
    assert all(rendezvous(states, k).target.label == v for k, v in owners.items())
    assert len(set(owners.values())) == 4
    # Removing one deployment moves only its own keys.
    rest = [s for s in states if s.target.label != "a"]
    moved = [k for k, v in owners.items() if v != "a" and rendezvous(rest, k).target.label != v]
    assert moved == []
