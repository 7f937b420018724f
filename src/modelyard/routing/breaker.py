"""A circuit breaker per deployment (outlier ejection, Envoy's defaults).

Opens after ``threshold`` consecutive *retryable* failures; stays open ``base_open_s × times
opened`` (capped at ``max_open_s``); then half-open, letting exactly one probe through: its success
closes the breaker, its failure opens it again for longer.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = (
        "_consecutive",
        "_open_until",
        "_probe_out",
        "base_open_s",
        "max_open_s",
        "threshold",
        "times_opened",
    )

    def __init__(self, *, threshold: int = 5, base_open_s: float = 30.0, max_open_s: float = 300.0) -> None:
        self.threshold = threshold
        self.base_open_s = base_open_s
        self.max_open_s = max_open_s
        self.times_opened = 0
        self._consecutive = 0
        self._open_until = 0.0
        self._probe_out = False

    def state(self, now: float) -> BreakerState:
        if self._open_until == 0.0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._open_until else BreakerState.HALF_OPEN

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (without taking the half-open probe slot)."""
        state = self.state(now)
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_out)

    def acquire(self, now: float) -> bool:
        """Take permission to send; in half-open state only the first caller gets it (the probe)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._open_until = 0.0
        self._probe_out = False

    def record_failure(self, now: float) -> None:
        """A retryable failure (5xx, 429, timeout, connection error). Caller errors do not count."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self._consecutive += 1
        if self._consecutive >= self.threshold and self._open_until == 0.0:
            self._open(now)

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled, or a caller error): let another probe through."""
        self._probe_out = False

    def _open(self, now: float) -> None:
        self.times_opened += 1
        self._open_until = now + min(self.base_open_s * self.times_opened, self.max_open_s)
        self._probe_out = False
        self._consecutive = 0

    def seconds_until_probe(self, now: float) -> float:
        return max(0.0, self._open_until - now)
