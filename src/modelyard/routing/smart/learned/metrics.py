"""RouteLLM's routing metrics: PGR, APGR and CPT, two ways, with bootstrap confidence intervals.

A router gives each prompt a score; prompts above a threshold go to the strong model. Sweeping the
threshold traces quality Q(x) against x, the share of calls sent to the strong model.

* ``PGR(x) = (Q(x) - Q_weak) / (Q_strong - Q_weak)``; **APGR** is its area over x in [0, 1];
  **CPT(p)** is the smallest x with PGR(x) >= p. A random router has APGR 0.5 and CPT(p) = p.

Two ways of computing them (both are reported; they differ by up to a few hundredths):

* :func:`routellm_metrics` reproduces ``routellm/evals``: thresholds are the 11 edges of 10
  quantile bins of the scores (``pd.qcut(..., retbins=True, duplicates="drop")``), a prompt goes to
  the strong model when ``score >= threshold``, the area is a trapezoid over the points reached
  (``np.trapezoid``; RouteLLM's ``np.trapz`` is gone from NumPy 2), and CPT is ``np.interp`` of
  the target quality over the points' qualities.
* :func:`grid_metrics` uses the exact curve: the k highest-scoring prompts go to the strong model
  for every k, with ties split evenly (the expected result of breaking ties at random, so a
  constant score is exactly the random router). APGR is the trapezoid over a 1% grid of x, CPT is
  the first grid point that reaches the target (no interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CPT_LEVELS",
    "CurveMetrics",
    "MetricsWithCI",
    "bootstrap",
    "exact_curve",
    "grid_metrics",
    "routellm_metrics",
]

FloatArray = npt.NDArray[np.float64]
CPT_LEVELS = (0.2, 0.5, 0.8)
GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, slots=True)
class CurveMetrics:
    """APGR and CPT(20/50/80%) of one router on one data set (shares are fractions in [0, 1])."""

    apgr: float
    cpt: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class MetricsWithCI:
    """Point estimates and bootstrap 95% intervals, for both ways of computing the metrics."""

    routellm: CurveMetrics
    grid: CurveMetrics
    routellm_low: CurveMetrics
    routellm_high: CurveMetrics
    grid_low: CurveMetrics
    grid_high: CurveMetrics
    resamples: int


def _tie_groups(scores: FloatArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Order by descending score, and the start index of each run of equal scores in that order."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts


def exact_curve(
    scores: FloatArray, strong: FloatArray, weak: FloatArray, weights: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """(share of strong calls, mean quality) at every cut, ties split evenly; starts at (0, Q_weak).

    ``weights`` (bootstrap multiplicities) count each prompt that many times.
    """
    w = np.ones_like(scores) if weights is None else weights
    order, starts = _tie_groups(scores)
    gain = ((strong - weak) * w)[order]
    mass = w[order]
    group_gain = np.add.reduceat(gain, starts)
    group_mass = np.add.reduceat(mass, starts)
    total = mass.sum()
    # Within a tie group the gain accrues in proportion to the mass taken (random tie-breaking).
    share = np.r_[0.0, np.cumsum(group_mass)] / total
    quality = (weak * w).sum() / total + np.r_[0.0, np.cumsum(group_gain)] / total
    return share, quality


def _pgr(quality: FloatArray, q_weak: float, q_strong: float) -> FloatArray:
    gap = q_strong - q_weak
    if abs(gap) < 1e-12:
        return np.zeros_like(quality)
    return (quality - q_weak) / gap


def grid_metrics(
    scores: FloatArray, strong: FloatArray, weak: FloatArray, weights: FloatArray | None = None
) -> CurveMetrics:
    """APGR on a 1% grid of the exact curve and CPT at the first grid point reaching the target."""
    share, quality = exact_curve(scores, strong, weak, weights)
    on_grid = np.interp(GRID, share, quality)
    pgr = _pgr(on_grid, float(quality[0]), float(quality[-1]))
    apgr = float(np.trapezoid(pgr, GRID))
    cpt = []
    for level in CPT_LEVELS:
        reached = np.flatnonzero(pgr >= level - 1e-12)
        cpt.append(float(GRID[reached[0]]) if reached.size else 1.0)
    return CurveMetrics(apgr=apgr, cpt=(cpt[0], cpt[1], cpt[2]))


def routellm_points(
    scores: FloatArray, strong: FloatArray, weak: FloatArray, bins: int = 10
) -> tuple[FloatArray, FloatArray]:
    """RouteLLM's evaluated points: (share of strong calls, quality) at each quantile-bin edge."""
    thresholds = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, bins + 1)))
    shares = np.empty(len(thresholds))
    qualities = np.empty(len(thresholds))
    for i, threshold in enumerate(thresholds):
        to_strong = scores >= threshold
        shares[i] = to_strong.mean()
        qualities[i] = np.where(to_strong, strong, weak).mean()
    order = np.argsort(shares, kind="stable")
    return shares[order], qualities[order]


def routellm_metrics(
    scores: FloatArray, strong: FloatArray, weak: FloatArray, bins: int = 10
) -> CurveMetrics:
    """APGR and CPT exactly as ``routellm/evals/evaluate.py`` computes them (see module docstring)."""
    shares, qualities = routellm_points(scores, strong, weak, bins)
    q_weak, q_strong = float(weak.mean()), float(strong.mean())
    if len(shares) < 2 or abs(q_strong - q_weak) < 1e-12:
        return CurveMetrics(apgr=float("nan"), cpt=(float("nan"),) * 3)
    area = float(np.trapezoid(qualities, shares))
    weak_area = float(np.trapezoid(np.full_like(shares, q_weak), shares))
    strong_area = float(np.trapezoid(np.full_like(shares, q_strong), shares))
    apgr = (area - weak_area) / (strong_area - weak_area)
    cpt = [float(np.interp(level * (q_strong - q_weak) + q_weak, qualities, shares)) for level in CPT_LEVELS]
    return CurveMetrics(apgr=apgr, cpt=(cpt[0], cpt[1], cpt[2]))


def _percentile(values: Sequence[CurveMetrics], q: float) -> CurveMetrics:
    apgr = np.array([v.apgr for v in values])
    cpt = np.array([v.cpt for v in values])
    low = np.nanpercentile(cpt, q, axis=0)
    return CurveMetrics(
        apgr=float(np.nanpercentile(apgr, q)), cpt=(float(low[0]), float(low[1]), float(low[2]))
    )


def bootstrap(
    scores: FloatArray,
    strong: FloatArray,
    weak: FloatArray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> MetricsWithCI:
    """Both metric sets with percentile 95% CIs over ``resamples`` resamples of the prompts.

    The scores stay fixed (the router is not retrained per resample), so the interval covers the
    sampling of evaluation prompts, as in RouteLLM-style tables.
    """
    rng = np.random.default_rng(seed)
    n = len(scores)
    grid_samples: list[CurveMetrics] = []
    routellm_samples: list[CurveMetrics] = []
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        weights = np.bincount(rows, minlength=n).astype(np.float64)
        grid_samples.append(grid_metrics(scores, strong, weak, weights))
        routellm_samples.append(routellm_metrics(scores[rows], strong[rows], weak[rows]))
    return MetricsWithCI(
        routellm=routellm_metrics(scores, strong, weak),
        grid=grid_metrics(scores, strong, weak),
        routellm_low=_percentile(routellm_samples, 2.5),
        routellm_high=_percentile(routellm_samples, 97.5),
        grid_low=_percentile(grid_samples, 2.5),
        grid_high=_percentile(grid_samples, 97.5),
        resamples=resamples,
    )
