"""A model group: one name's deployments in priority tiers, and how one is chosen for a request.

Selection walks the tiers in priority order. A tier serves when one of its deployments has a
free slot, or an acceptable queue (expected wait within ``spill_after_s``). Otherwise the request
*spills* to the next tier, and the reason (``saturated``, ``queue_wait``, ``down``) is recorded.
If every deployment's breaker is open, the group still serves (never eject the last one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.config.schema import RoutingConfig
from modelyard.routing.affinity import AffinityMap
from modelyard.routing.balance import Balancer
from modelyard.routing.deployment import DeploymentState


class NoCapacity(Exception):
    """No deployment of the group can take the request now."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Choice:
    deployment: DeploymentState
    reason: str
    """``primary``, ``spill:<why>``, ``panic`` (all breakers open), ``sticky``, ``affinity`` (the
    conversation's warm deployment) or ``affinity_yield:<why>`` (its home could not take it)."""
    queued: bool
    """Whether the request will wait in this deployment's queue."""


class ModelGroup:
    def __init__(
        self,
        name: str,
        deployments: Sequence[DeploymentState],
        routing: RoutingConfig,
        balancer: Balancer,
        affinity: AffinityMap | None = None,
    ) -> None:
        self.name = name
        self.deployments = list(deployments)
        self.routing = routing
        self.balancer = balancer
        self.affinity = affinity
        """Prompt-cache affinity memory, when ``routing.affinity.mode`` is not ``none``."""
        self.tiers = sorted({d.policy.priority for d in self.deployments})

    def select(
        self, now: float, exclude: set[str], sticky_key: str | None = None, affinity_key: str | None = None
    ) -> Choice:
        """The deployment for a request: its conversation's home when it can take it at once,
        else the tiers and the balancer."""
        if affinity_key is None or self.affinity is None:
            return self._balance(now, exclude, sticky_key)
        home, why = self.affinity.choose(affinity_key, now, exclude, self.deployments)
        if home is not None:
            return Choice(home, "affinity", False)
        choice = self._balance(now, exclude, None)
        if why is not None and choice.reason == "primary":
            return Choice(choice.deployment, f"affinity_yield:{why}", choice.queued)
        return choice

    def _balance(self, now: float, exclude: set[str], sticky_key: str | None) -> Choice:
        spill: str | None = None
        queue_candidates: list[DeploymentState] = []
        for tier in self.tiers:
            members = [d for d in self.deployments if d.policy.priority == tier and d.label not in exclude]
            if not members:
                continue
            up = [d for d in members if d.available(now)]
            if not up:
                spill = spill or "down"
                continue
            free = [d for d in up if d.has_free_slot()]
            if free:
                chosen = self.balancer.choose(free, now, sticky_key)
                return Choice(chosen, self._reason(spill, sticky_key), False)
            acceptable = [
                d
                for d in up
                if d.queued < d.policy.max_queue
                and (d.policy.spill_after_s is None or d.expected_wait_s() <= d.policy.spill_after_s)
            ]
            if acceptable:
                chosen = min(acceptable, key=lambda d: d.expected_wait_s())
                return Choice(chosen, self._reason(spill, sticky_key), True)
            queue_candidates += [d for d in up if d.queued < d.policy.max_queue]
            spill = spill or ("queue_wait" if queue_candidates else "saturated")
        if queue_candidates:
            # Every tier is past its spill target but some queue has room: better late than 503.
            chosen = min(queue_candidates, key=lambda d: d.expected_wait_s())
            return Choice(chosen, f"spill:{spill}", True)
        remaining = [d for d in self.deployments if d.label not in exclude]
        if remaining and not any(d.available(now) for d in remaining):
            # Panic mode: all breakers are open. Never eject the last deployment: try the one
            # whose breaker would half-open first.
            chosen = min(remaining, key=lambda d: d.breaker.seconds_until_probe(now))
            if chosen.has_free_slot() or chosen.queued < chosen.policy.max_queue:
                return Choice(chosen, "panic", not chosen.has_free_slot())
        if not remaining:
            raise NoCapacity(f"every deployment of {self.name!r} was tried", 1.0)
        wait = min((d.expected_wait_s() for d in remaining), default=1.0)
        raise NoCapacity(f"every deployment of {self.name!r} is saturated", max(0.5, wait))

    @staticmethod
    def _reason(spill: str | None, sticky_key: str | None) -> str:
        if spill is not None:
            return f"spill:{spill}"
        return "sticky" if sticky_key is not None else "primary"
