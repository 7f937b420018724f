"""The live state of one deployment: in-flight count, bounded admission queue, latency, health.

Everything here runs on the event loop and is only touched from it, so plain counters suffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from modelyard.providers.registry import Target
from modelyard.routing.breaker import BreakerState, CircuitBreaker
from modelyard.routing.retry_budget import RetryBudget

# A deployment that has not answered yet is assumed this fast: optimistic, so new or recovered
# deployments get tried, but not so fast that one sample of a slow one stops it being explored.
PRIOR_LATENCY_S = 0.5
EWMA_DECAY = 0.3
FAILURE_PENALTY_S = 2.0
"""Seconds added to a deployment's latency estimate right after a failure, decaying to 0 over
the penalty span. Additive, so a replica failing fast (nothing in flight, low latency) still
scores worse than a busy healthy one: a multiplier on a near-zero product would not."""
DEFAULT_PENALTY_S = 10.0


class Saturated(Exception):
    """The deployment cannot take the request: concurrency full and queue full or wait too long."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class DeploymentPolicy:
    """Per-deployment limits and routing facts (from config; defaults documented there)."""

    priority: int = 0
    weight: float = 1.0
    max_concurrency: int | None = None
    max_queue: int = 0
    max_queue_wait_s: float = 1.0
    spill_after_s: float | None = None
    cost_per_mtok: float | None = None
    ttfb_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    tags: tuple[str, ...] = ()
    local: bool = False
    hardware: Any = None
    """The deployment's HardwareConfig (self-hosted cost), if configured."""


class DeploymentState:
    """One deployment of a model group, with what the balancer and admission control read."""

    def __init__(
        self, target: Target, policy: DeploymentPolicy, *, breaker: CircuitBreaker, budget: RetryBudget
    ) -> None:
        self.target = target
        self.policy = policy
        self.breaker = breaker
        self.budget = budget
        self.in_flight = 0
        self.ewma_s: float | None = None
        self._penalty_until = 0.0
        self._penalty_span = DEFAULT_PENALTY_S
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.served = 0
        self.failures = 0

    # -- what routing reads ------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.target.label

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def latency_estimate(self) -> float:
        return self.ewma_s if self.ewma_s is not None else PRIOR_LATENCY_S

    def penalty(self, now: float) -> float:
        """Seconds of failure penalty now: FAILURE_PENALTY_S right after a failure, 0 once the span
        (its Retry-After, else 10 s) has passed."""
        if now >= self._penalty_until:
            return 0.0
        return FAILURE_PENALTY_S * (self._penalty_until - now) / self._penalty_span

    def score(self, now: float) -> float:
        """P2C's load score, lower is better: (EWMA latency + failure penalty) × (in flight + queued + 1)."""
        return (self.latency_estimate() + self.penalty(now)) * (self.in_flight + self.queued + 1)

    def has_free_slot(self) -> bool:
        limit = self.policy.max_concurrency
        return limit is None or (self.in_flight < limit and not self.queued)

    def expected_wait_s(self) -> float:
        """How long a new request would queue here before starting (0 with a free slot)."""
        limit = self.policy.max_concurrency
        if limit is None or self.has_free_slot():
            return 0.0
        return (self.queued + 1) * self.latency_estimate() / limit

    def available(self, now: float) -> bool:
        return self.breaker.available(now)

    # -- admission --------------------------------------------------------------------------
    async def acquire(self, max_wait_s: float) -> None:
        """Take a concurrency slot, queueing (bounded, FIFO) for at most ``max_wait_s``."""
        if self.has_free_slot():
            self.in_flight += 1
            return
        limit = self.policy.max_concurrency
        retry_after = max(0.5, self.expected_wait_s())
        if self.queued >= self.policy.max_queue or max_wait_s <= 0:
            raise Saturated(
                f"{self.label} is saturated ({self.in_flight}/{limit} in flight, "
                f"{self.queued}/{self.policy.max_queue} queued)",
                retry_after,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=max_wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed to us just as we gave up: pass it on.
                self.release()
            else:
                waiter.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Saturated(
                f"{self.label}: waited {max_wait_s:.2f}s in the queue without a free slot", retry_after
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Give the slot back, or hand it straight to the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    # -- outcomes ---------------------------------------------------------------------------
    def record_latency(self, seconds: float) -> None:
        """Peak-EWMA: jump up to a slower sample at once, decay down slowly."""
        if self.ewma_s is None or seconds > self.ewma_s:
            self.ewma_s = seconds
        else:
            self.ewma_s += EWMA_DECAY * (seconds - self.ewma_s)

    def record_success(self, latency_s: float) -> None:
        self.served += 1
        self.record_latency(latency_s)
        self.breaker.record_success()

    def record_failure(
        self, now: float, *, retry_after_s: float | None = None, latency_s: float | None = None
    ) -> None:
        """A retryable failure: penalised in balancing (fast 503s must not look fast), seen by the breaker."""
        self.failures += 1
        span = retry_after_s if retry_after_s and retry_after_s > 0 else DEFAULT_PENALTY_S
        self._penalty_span = span
        self._penalty_until = now + span
        if latency_s is not None:
            self.record_latency(latency_s)
        self.breaker.record_failure(now)

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        at = time.monotonic() if now is None else now
        state = self.breaker.state(at)
        return {
            "deployment": self.label,
            "priority": self.policy.priority,
            "weight": self.policy.weight,
            "local": self.policy.local,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "max_concurrency": self.policy.max_concurrency,
            "ewma_latency_ms": None if self.ewma_s is None else round(self.ewma_s * 1000, 2),
            "breaker": state.value,
            "breaker_opens_in_s": round(self.breaker.seconds_until_probe(at), 2)
            if state is BreakerState.OPEN
            else 0,
            "penalty_s": round(self.penalty(at), 3),
            "served": self.served,
            "failures": self.failures,
        }
