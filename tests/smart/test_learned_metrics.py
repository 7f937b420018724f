"""Routing metrics against hand-computed values (RouteLLM's way and the exact 1% grid)."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.routing.smart.learned import baselines
from modelyard.routing.smart.learned.metrics import (
    bootstrap,
    exact_curve,
    grid_metrics,
    routellm_metrics,
    routellm_points,
)

# Ten prompts, scores 10..1; the strong model is always right, the weak one wrong on the four
# highest-scoring prompts. Q_weak = 0.6, Q_strong = 1.0; sending the top k costs nothing extra
# after k = 4, so PGR(x) = min(x / 0.4, 1).
SCORES = np.arange(10, 0, -1, dtype=np.float64)
STRONG = np.ones(10)
WEAK = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=np.float64)


def test_exact_curve_steps_through_every_cut() -> None:
    share, quality = exact_curve(SCORES, STRONG, WEAK)
    assert share == pytest.approx(np.linspace(0, 1, 11))
    assert quality == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_grid_metrics_by_hand() -> None:
    m = grid_metrics(SCORES, STRONG, WEAK)
    # area of min(x / 0.4, 1) over [0, 1] = 0.4 / 2 + 0.6
    assert m.apgr == pytest.approx(0.8)
    assert m.cpt == pytest.approx((0.08, 0.20, 0.32))


def test_routellm_way_by_hand() -> None:
    # Thresholds: the 11 quantiles of 1..10 (1, 1.9, 2.8, ..., 10): shares 1.0, 0.9, ..., 0.1, 0.1.
    shares, _qualities = routellm_points(SCORES, STRONG, WEAK)
    assert shares[:3] == pytest.approx([0.1, 0.1, 0.2])
    m = routellm_metrics(SCORES, STRONG, WEAK)
    # trapezoid from x = 0.1: .075 + .085 + .095 + 0.6 = 0.855; weak area .54, strong area .9
    assert m.apgr == pytest.approx((0.855 - 0.54) / (0.9 - 0.54))
    # np.interp of the target quality over the points: 0.68 clamps to 0.1, 0.8 hits 0.2, 0.92 → 0.32
    assert m.cpt == pytest.approx((0.1, 0.2, 0.32))


def test_ties_are_split_evenly_so_a_constant_score_is_the_random_router() -> None:
    rng = np.random.default_rng(1)
    strong = (rng.random(500) < 0.8).astype(float)
    weak = (rng.random(500) < 0.6).astype(float)
    m = grid_metrics(np.zeros(500), strong, weak)
    assert m.apgr == pytest.approx(0.5)
    assert m.cpt == pytest.approx((0.2, 0.5, 0.8))


def test_random_router_is_near_half_and_oracle_beats_one() -> None:
    rng = np.random.default_rng(2)
    strong = (rng.random(20_000) < 0.8).astype(float)
    weak = (rng.random(20_000) < 0.68).astype(float)
    random_router = grid_metrics(baselines.random_scores(20_000, seed=3), strong, weak)
    assert random_router.apgr == pytest.approx(0.5, abs=0.03)
    assert random_router.cpt[1] == pytest.approx(0.5, abs=0.04)
    oracle = grid_metrics(baselines.oracle(strong, weak), strong, weak)
    assert oracle.apgr > 1.0  # it avoids the strong model where the weak one is right and it is not
    assert routellm_metrics(baselines.oracle(strong, weak), strong, weak).apgr > 1.0


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(4)
    strong = (rng.random(400) < 0.8).astype(float)
    weak = (rng.random(400) < 0.6).astype(float)
    scores = strong - weak + rng.normal(0, 3.0, 400)
    first = bootstrap(scores, strong, weak, resamples=200, seed=7)
    again = bootstrap(scores, strong, weak, resamples=200, seed=7)
    assert first == again
    assert first.grid_low.apgr < first.grid.apgr < first.grid_high.apgr
    assert first.routellm_low.apgr < first.routellm.apgr < first.routellm_high.apgr
    assert 0.0 < first.grid_high.apgr - first.grid_low.apgr < 0.6


def test_weighted_curve_equals_repeating_prompts() -> None:
    weights = np.array([2, 1, 0, 1, 3, 1, 1, 0, 2, 1], dtype=np.float64)
    rows = np.repeat(np.arange(10), weights.astype(int))
    assert grid_metrics(SCORES, STRONG, WEAK, weights) == grid_metrics(SCORES[rows], STRONG[rows], WEAK[rows])


def test_group_prior_and_tfidf_baselines() -> None:
    prior = baselines.group_prior(["a", "a", "b"], np.array([1.0, 1.0, 0.0]), ["a", "b", "c"], shrinkage=1.0)
    overall = 2 / 3
    assert prior == pytest.approx([(2 + overall) / 3, overall / 2, overall])
    train = [
        "solve the integral of x",
        "solve the derivative of x",
        "who wrote hamlet",
        "who painted guernica",
    ]
    knn = baselines.tfidf_knn(train, np.array([1.0, 1.0, 0.0, 0.0]), ["solve the integral"], k=2)
    assert knn == pytest.approx([1.0])
