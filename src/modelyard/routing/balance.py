"""Load-balancing strategies: pick one deployment among those that can take a request now."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from enum import StrEnum

from modelyard.routing.deployment import DeploymentState


class Strategy(StrEnum):
    P2C_EWMA = "p2c_ewma"
    """Default: two at random, keep the lower EWMA latency × (in-flight + 1) × failure penalty."""
    LEAST_OUTSTANDING = "least_outstanding"
    WEIGHTED = "weighted"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    LOWEST_COST = "lowest_cost"
    PRIORITY = "priority"
    """Config order: the first available deployment always."""


class Balancer:
    """Chooses among candidates. One per model group (round-robin keeps its own counter)."""

    def __init__(self, strategy: Strategy, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self._rng = rng or random.Random()
        self._counter = itertools.count()

    def choose(
        self, candidates: Sequence[DeploymentState], now: float, sticky_key: str | None = None
    ) -> DeploymentState:
        if len(candidates) == 1:
            return candidates[0]
        if sticky_key is not None:
            return rendezvous(candidates, sticky_key)
        strategy = self.strategy
        if strategy is Strategy.P2C_EWMA:
            a, b = self._rng.sample(list(candidates), 2)
            return a if a.score(now) <= b.score(now) else b
        if strategy is Strategy.LEAST_OUTSTANDING:
            low = min(c.in_flight + c.queued for c in candidates)
            return self._rng.choice([c for c in candidates if c.in_flight + c.queued == low])
        if strategy is Strategy.WEIGHTED:
            return self._rng.choices(
                list(candidates), weights=[max(c.policy.weight, 0.0) for c in candidates]
            )[0]
        if strategy is Strategy.ROUND_ROBIN:
            return candidates[next(self._counter) % len(candidates)]
        if strategy is Strategy.RANDOM:
            return self._rng.choice(list(candidates))
        if strategy is Strategy.LOWEST_COST:

            def cost(c: DeploymentState) -> float:
                return c.policy.cost_per_mtok if c.policy.cost_per_mtok is not None else float("inf")

            cheapest = min(cost(c) for c in candidates)
            tied = [c for c in candidates if cost(c) == cheapest]
            return tied[0] if len(tied) == 1 else min(tied, key=lambda c: c.score(now))
        return candidates[0]


def rendezvous(candidates: Sequence[DeploymentState], key: str) -> DeploymentState:
    """Highest-random-weight hashing: the same key keeps its deployment while it stays available."""

    def weight(c: DeploymentState) -> bytes:
        return hashlib.blake2b(f"{key}|{c.label}".encode(), digest_size=8).digest()

    return max(candidates, key=weight)
