"""Full-jitter exponential backoff (AWS Builders' Library) and ``Retry-After`` parsing."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime


def full_jitter(
    attempt: int, *, base_s: float = 0.25, cap_s: float = 4.0, rng: random.Random | None = None
) -> float:
    """Delay before same-deployment retry number ``attempt`` (1-based): uniform in [0, min(cap, base·2^n))."""
    high = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, high)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_epoch)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
