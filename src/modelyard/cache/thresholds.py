"""From a target precision to a similarity threshold, using the measured curve.

The table is the output of ``benchmarks/semantic_cache.py`` (all-MiniLM-L6-v2 int8 on Quora
Question Pairs, the dev half): for each target precision, the lowest cosine threshold whose hits
reached it. QQP has label noise and a workload of its own; treat the mapping as a starting point
and measure on your own traffic (docs/caching.md).
"""

from __future__ import annotations

__all__ = ["PRECISION_THRESHOLDS", "threshold_for_precision"]

PRECISION_THRESHOLDS: tuple[tuple[float, float], ...] = (
    (0.80, 0.90),
    (0.85, 0.93),
    (0.90, 0.96),
)
"""(precision of hits, lowest threshold reaching it on the dev half), ascending. On the test half
these gave 0.80, 0.83 and 0.86 (6,000 sampled pairs, seed 7; benchmarks/RESULTS.md). No threshold
reached 0.95 on QQP, whose labels are noisy; set ``threshold`` yourself to go beyond 0.96."""


def threshold_for_precision(precision: float) -> float:
    """The threshold for the smallest tabulated precision at or above ``precision`` (the highest
    tabulated threshold for anything above the table)."""
    for reached, threshold in PRECISION_THRESHOLDS:
        if reached >= precision - 1e-9:
            return threshold
    return PRECISION_THRESHOLDS[-1][1]
