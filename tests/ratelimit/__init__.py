"""Rate limiter tests: both backends, window edges, atomicity, settlement, C4 and C5."""
