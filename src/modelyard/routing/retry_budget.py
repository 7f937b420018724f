"""A retry budget per deployment (Finagle / Envoy): retries stay a bounded share of traffic.

Over a sliding window of ``window_s`` seconds, retries may be at most ``ratio`` × first attempts
plus ``min_per_s`` × window (so a quiet deployment can still retry). A timeout costs 2, since a
timed-out attempt may have been billed and is expensive to repeat.
"""

from __future__ import annotations

import math
from collections import deque


class RetryBudget:
    __slots__ = ("_firsts", "_retries", "min_per_s", "ratio", "window_s")

    def __init__(self, *, ratio: float = 0.2, window_s: float = 10.0, min_per_s: float = 3.0) -> None:
        self.ratio = ratio
        self.window_s = window_s
        self.min_per_s = min_per_s
        self._firsts: deque[float] = deque()
        self._retries: deque[tuple[float, int]] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._firsts and self._firsts[0] <= horizon:
            self._firsts.popleft()
        while self._retries and self._retries[0][0] <= horizon:
            self._retries.popleft()

    def record_first_attempt(self, now: float) -> None:
        self._firsts.append(now)

    def allowance(self, now: float) -> int:
        self._expire(now)
        return math.floor(self.ratio * len(self._firsts) + self.min_per_s * self.window_s)

    def spent(self, now: float) -> int:
        self._expire(now)
        return sum(cost for _, cost in self._retries)

    def try_spend(self, now: float, *, timeout: bool = False) -> bool:
        """Take a retry from the budget; False (and nothing taken) when it is empty."""
        cost = 2 if timeout else 1
        if self.spent(now) + cost > self.allowance(now):
            return False
        self._retries.append((now, cost))
        return True
