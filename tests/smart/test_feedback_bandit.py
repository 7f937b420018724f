"""The bandit: feedback moves the choice in the expected direction; exploration stays bounded;
a replaced score is corrected, not counted twice."""

from __future__ import annotations

import random
from collections import Counter

from modelyard.routing.smart.bandit import Bandit

COST = {"local": 0.0, "mini": 0.05, "big": 1.0}
CANDIDATES = ["local", "mini", "big"]


def bandit(seed: int = 7, exploration: float = 0.0) -> Bandit:
    return Bandit({"local": 0.6, "mini": 0.8, "big": 0.95}, exploration=exploration, rng=random.Random(seed))


def test_good_feedback_on_the_cheap_model_moves_traffic_to_it() -> None:
    b = bandit()
    assert b.choose("", CANDIDATES, COST, 0.75).model == "mini"  # the prior: local is not good enough
    for _ in range(6):
        b.update("", "local", 1.0)
    choice = b.choose("", CANDIDATES, COST, 0.75)
    assert choice.model == "local" and choice.meets_target and not choice.explored


def test_bad_feedback_moves_traffic_to_a_stronger_model() -> None:
    b = bandit()
    for _ in range(4):
        b.update("", "mini", 0.0)
    assert b.choose("", CANDIDATES, COST, 0.75).model == "big"


def test_feedback_is_kept_per_task() -> None:
    b = bandit()
    for _ in range(8):
        b.update("extraction", "local", 1.0)
    assert b.choose("extraction", CANDIDATES, COST, 0.75).model == "local"
    assert b.choose("", CANDIDATES, COST, 0.75).model == "mini"
    assert b.choose("code", CANDIDATES, COST, 0.75).model == "mini"


def test_exploration_is_bounded_and_seeded() -> None:
    def run(seed: int) -> Counter[tuple[str, bool]]:
        b = bandit(seed, exploration=0.1)
        return Counter(
            (c.model, c.explored) for c in (b.choose("", CANDIDATES, COST, 0.75) for _ in range(2000))
        )

    counts = run(1)
    assert counts == run(1)  # same seed, same decisions
    explored = sum(n for (_, e), n in counts.items() if e)
    assert 140 <= explored <= 260  # ≈ 10 % of 2,000
    off_best = sum(n for (m, _), n in counts.items() if m != "mini")
    assert off_best <= explored  # only an exploring decision may leave the current best


def test_a_replaced_score_is_corrected_not_doubled() -> None:
    b = bandit()
    b.update("", "local", 1.0)
    before = b.means("")["local"]
    b.update("", "local", 0.0 - 1.0, replace=True)  # the same request, thumbs up → down
    after = b.means("")["local"]
    fresh = bandit()
    fresh.update("", "local", 0.0)
    assert after < before and abs(after - fresh.means("")["local"]) < 1e-9


def test_learning_can_be_switched_off() -> None:
    b = Bandit({"local": 0.6, "mini": 0.8}, enabled=False, exploration=0.5, rng=random.Random(0))
    assert not b.update("", "local", 1.0)
    assert {b.choose("", ["local", "mini"], COST, 0.75).model for _ in range(50)} == {"mini"}
