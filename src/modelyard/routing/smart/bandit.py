"""Online learning from feedback: a Beta-Bernoulli Thompson-sampling bandit per route and task.

Each candidate model of a route has, per task, a Beta posterior over its quality (the expected
feedback score, 0..1). The prior is the candidate's prior quality worth ``prior_strength``
scores; every feedback score ``s`` adds ``s`` to α and ``1 − s`` to β.

A choice takes each candidate's quality θ — the posterior *mean* normally, a posterior *sample*
on at most an ``exploration`` share of decisions (bounded exploration) — and picks the cheapest
candidate with θ ≥ the quality target. When none meets it, the highest θ − cost_weight × relative
cost wins (the cost penalty; relative cost is the candidate's price over the costliest one's).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NO_TASK = ""
"""The bucket of requests without a (sure) task."""


@dataclass(slots=True)
class Arm:
    alpha: float
    beta: float
    n: float = 0.0
    """Feedback scores received."""

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True, slots=True)
class BanditChoice:
    model: str
    explored: bool
    """Whether this decision used posterior samples (exploration)."""
    quality: float
    """The chosen model's θ."""
    meets_target: bool


@dataclass(slots=True)
class Bandit:
    """The posteriors of one route: task → model → Arm."""

    priors: Mapping[str, float]
    """Model → prior quality (0..1)."""
    prior_strength: float = 4.0
    exploration: float = 0.1
    cost_weight: float = 0.1
    enabled: bool = True
    rng: random.Random = field(default_factory=random.Random)
    arms: dict[str, dict[str, Arm]] = field(default_factory=dict)

    def _arms(self, task: str) -> dict[str, Arm]:
        arms = self.arms.get(task)
        if arms is None:
            arms = {}
            for model, q in self.priors.items():
                q = min(max(q, 0.01), 0.99)
                arms[model] = Arm(q * self.prior_strength, (1 - q) * self.prior_strength)
            self.arms[task] = arms
        return arms

    def means(self, task: str) -> dict[str, float]:
        return {m: a.mean for m, a in self._arms(task).items()}

    def choose(
        self, task: str, allowed: Sequence[str], relative_cost: Mapping[str, float], target: float
    ) -> BanditChoice:
        """The candidate to serve a request of ``task`` among ``allowed`` (never empty)."""
        arms = self._arms(task)
        explore = self.enabled and self.exploration > 0 and self.rng.random() < self.exploration
        theta: dict[str, float] = {}
        for model in allowed:
            arm = arms.get(model) or Arm(0.5 * self.prior_strength, 0.5 * self.prior_strength)
            theta[model] = self.rng.betavariate(arm.alpha, arm.beta) if explore else arm.mean
        feasible = [m for m in allowed if theta[m] >= target]
        cost = relative_cost.get
        if feasible:
            # The cheapest expected to meet the target (the better one among equally cheap).
            best = min(feasible, key=lambda m: (cost(m, 0.0), -theta[m], allowed.index(m)))
        else:
            # None is: trade quality against cost.
            best = max(allowed, key=lambda m: (theta[m] - self.cost_weight * cost(m, 0.0), -allowed.index(m)))
        return BanditChoice(best, explore, theta[best], bool(feasible))

    def update(self, task: str, model: str, score: float, *, replace: bool = False) -> bool:
        """Add one feedback score (0..1) for ``model`` on ``task``; with ``replace``, ``score`` is
        the change of an earlier score on the same request (−1..1). False if the model is unknown
        or learning is off."""
        if not self.enabled:
            return False
        arm = self._arms(task).get(model)
        if arm is None:
            return False
        if replace:
            arm.alpha = max(1e-3, arm.alpha + score)
            arm.beta = max(1e-3, arm.beta - score)
            return True
        score = min(max(score, 0.0), 1.0)
        arm.alpha += score
        arm.beta += 1.0 - score
        arm.n += 1
        return True

    def snapshot(self) -> dict[str, dict[str, dict[str, float]]]:
        """task → model → {mean, alpha, beta, n} (for reports)."""
        return {
            task or "(none)": {
                m: {"mean": round(a.mean, 4), "alpha": round(a.alpha, 3), "beta": round(a.beta, 3), "n": a.n}
                for m, a in arms.items()
            }
            for task, arms in self.arms.items()
        }


__all__ = ["NO_TASK", "Arm", "Bandit", "BanditChoice"]
