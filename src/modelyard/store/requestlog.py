"""The request log: one stored row per finished request, and the rollups the dashboard reads.

Three tables, written in one transaction per batch (see :meth:`Store.write_requests`):

* ``requests``: one row per request, from its :class:`~modelyard.telemetry.record.RequestRecord`
  (metadata always; the prompt and answer only when capture is on for the key or globally).
* ``request_rollup``: per-minute (``res`` 60), per-hour (3600) and per-day (86400) sums by model,
  deployment, key, team, local, route and cache result. Dashboard charts and totals read these:
  a range is summed from whole days where it can, hours or minutes at its edges
  (:func:`time_ranges`), so a 7-day view sums thousands of rows instead of a million.
* ``request_latency``: the same buckets of duration and TTFT histograms (log-scale slots, about
  ±9 %), from which p50/p95 are read without sorting raw rows.

Rollups are added only for rows actually inserted (a replayed batch adds nothing): the write is
idempotent, so a batch whose commit outcome is unknown can be retried safely.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ERROR_OUTCOMES",
    "LATENCY_METRICS",
    "RESOLUTIONS",
    "LatencyDelta",
    "RequestQuery",
    "RequestRow",
    "RollupDelta",
    "RollupQuery",
    "Visibility",
    "latency_slot",
    "percentile",
    "resolution_for",
    "rollup_deltas",
    "slot_value_ms",
    "time_ranges",
]

RESOLUTIONS = (60, 3600, 86400)
"""Rollup bucket sizes, seconds: minutes for short views, hours for long ones, days for the middle
of long ones."""
DAY = 86400
ERROR_OUTCOMES = ("error", "upstream_cut", "timeout")
"""Outcomes counted as errors (a client that went away is not the gateway's error)."""
LATENCY_METRICS = ("duration", "ttft")
SLOTS_PER_DOUBLING = 4
MAX_SLOT = 4 * 32


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One stored request. ``prompt``/``response`` are text, or None when not captured (or when a
    list query left them out: then ``captured`` still says whether they exist)."""

    request_id: str
    created_at: float
    """Unix seconds when the request arrived."""
    duration_ms: float
    method: str
    path: str
    operation: str
    dialect: str
    key_id: str | None
    key_hint: str
    team_id: str | None
    user_id: str | None
    tags: tuple[str, ...]
    model: str | None
    deployment: str | None
    provider: str | None
    response_model: str | None
    route: str | None
    local: bool
    stream: bool
    status: int
    outcome: str
    error_type: str | None
    error_message: str | None
    tokens_in: int
    tokens_out: int
    tokens_cache_read: int
    tokens_cache_write: int
    cost_nano: int
    ttft_ms: float | None
    overhead_ms: float
    attempts: tuple[dict[str, Any], ...]
    cache: str | None
    prompt: str | None = None
    response: str | None = None
    captured: bool = False

    @property
    def is_error(self) -> bool:
        return self.outcome in ERROR_OUTCOMES

    def view(self) -> dict[str, Any]:
        """The row as the admin API shows it (JSON-ready)."""
        out = {name: getattr(self, name) for name in REQUEST_COLUMNS}
        out["tags"] = list(self.tags)
        out["attempts"] = list(self.attempts)
        out["captured"] = self.captured or self.prompt is not None or self.response is not None
        return out


REQUEST_COLUMNS = (
    "request_id",
    "created_at",
    "duration_ms",
    "method",
    "path",
    "operation",
    "dialect",
    "key_id",
    "key_hint",
    "team_id",
    "user_id",
    "tags",
    "model",
    "deployment",
    "provider",
    "response_model",
    "route",
    "local",
    "stream",
    "status",
    "outcome",
    "error_type",
    "error_message",
    "tokens_in",
    "tokens_out",
    "tokens_cache_read",
    "tokens_cache_write",
    "cost_nano",
    "ttft_ms",
    "overhead_ms",
    "attempts",
    "cache",
    "captured",
    "prompt",
    "response",
)
"""Column order of the ``requests`` table (and of :func:`request_to_row`)."""


def request_to_row(row: RequestRow) -> tuple[Any, ...]:
    """Column values in :data:`REQUEST_COLUMNS` order (tags and attempts as JSON text)."""
    values: list[Any] = []
    for name in REQUEST_COLUMNS:
        value = getattr(row, name)
        if name == "tags":
            value = orjson.dumps(list(row.tags)).decode()
        elif name == "attempts":
            value = orjson.dumps(list(row.attempts)).decode()
        elif name in ("local", "stream"):
            value = bool(value)
        elif name == "captured":
            value = bool(row.captured or row.prompt is not None or row.response is not None)
        values.append(value)
    return tuple(values)


def request_from_row(values: Sequence[Any]) -> RequestRow:
    """A row read back; ``values`` in :data:`REQUEST_COLUMNS` order."""
    data = dict(zip(REQUEST_COLUMNS, values, strict=True))
    data["tags"] = tuple(orjson.loads(data["tags"] or "[]"))
    data["attempts"] = tuple(orjson.loads(data["attempts"] or "[]"))
    data["local"] = bool(data["local"])
    data["stream"] = bool(data["stream"])
    data["status"] = int(data["status"])
    for name in ("tokens_in", "tokens_out", "tokens_cache_read", "tokens_cache_write", "cost_nano"):
        data[name] = int(data[name])
    data["captured"] = bool(data["captured"])
    return RequestRow(**data)


# -- queries -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Visibility:
    """Whose rows a caller may see: None everywhere means everything (``org_id`` and ``user_id``
    are matched through the key that made the request)."""

    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """A request-log search. Every filter is optional; ``text`` searches only the stored prompts
    and answers (case-insensitive substring)."""

    since: float | None = None
    until: float | None = None
    key_id: str | None = None
    team_id: str | None = None
    model: str | None = None
    deployment: str | None = None
    status: str | None = None
    """An HTTP status (``429``), a class (``5xx``), an outcome (``ok``, ``error``, ``timeout``,
    ``upstream_cut``, ``client_disconnect``) or ``errors`` (every error outcome)."""
    text: str | None = None
    """Searches at most the newest 10,000 captured requests that pass the other filters
    (``TEXT_SCAN_LIMIT``)."""
    limit: int = 100
    visibility: Visibility = field(default_factory=Visibility)


ROLLUP_DIMENSIONS = ("model", "deployment", "key_id", "team_id", "local", "route", "cache")
"""What rollups are summed by (besides the time bucket); empty text stands for none. Kept few on
purpose: each one multiplies the rows a long view sums (errors are a sum, not a dimension)."""
ROLLUP_SUMS = (
    "requests",
    "errors",
    "tokens_in",
    "tokens_out",
    "tokens_cache_read",
    "tokens_cache_write",
    "cost_nano",
    "duration_ms_sum",
    "ttft_count",
    "ttft_ms_sum",
)


@dataclass(frozen=True, slots=True)
class RollupQuery:
    """Sums of the rollups over [since, until), grouped by ``group_by`` — any of
    :data:`ROLLUP_DIMENSIONS`, ``tags`` or ``bucket`` (the time bucket's start)."""

    since: float
    until: float
    group_by: tuple[str, ...] = ()
    res: int | None = None
    """Finest bucket size (60 or 3600); None: chosen from the span (:func:`resolution_for`).
    Grouped by ``bucket``, every bucket is this size; otherwise whole days inside the range are
    read from the daily rollups."""
    visibility: Visibility = field(default_factory=Visibility)

    @property
    def resolution(self) -> int:
        return self.res if self.res is not None else resolution_for(self.until - self.since)

    def ranges(self) -> list[tuple[int, int, int]]:
        return time_ranges(self.since, self.until, self.resolution, days="bucket" not in self.group_by)


def resolution_for(span_s: float) -> int:
    """Minutes up to 6 hours, hours beyond."""
    return 60 if span_s <= 6 * 3600 else 3600


def time_ranges(since: float, until: float, res: int, *, days: bool = True) -> list[tuple[int, int, int]]:
    """The rollup buckets covering [since, until) as (res, first bucket, end) ranges: buckets of
    ``res`` from the one holding ``since``; with ``days``, whole UTC days in between come from the
    daily rollups (the edges stay at ``res``)."""
    first = int(since // res) * res
    end = int(until)
    day_from, day_to = -(-first // DAY) * DAY, (end // DAY) * DAY
    if not days or res >= DAY or day_to <= day_from:
        return [(res, first, end)]
    ranges = [(res, first, day_from), (DAY, day_from, day_to), (res, day_to, end)]
    return [r for r in ranges if r[1] < r[2]]


# -- rollups -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RollupDelta:
    """What a batch adds to one rollup row."""

    res: int
    bucket: int
    model: str
    deployment: str
    key_id: str
    team_id: str
    local: bool
    route: str
    cache: str
    tags: str
    sums: tuple[int | float, ...]
    """In :data:`ROLLUP_SUMS` order."""

    def values(self) -> tuple[Any, ...]:
        return (
            self.res,
            self.bucket,
            self.model,
            self.deployment,
            self.key_id,
            self.team_id,
            self.local,
            self.route,
            self.cache,
            self.tags,
            *self.sums,
        )


@dataclass(frozen=True, slots=True)
class LatencyDelta:
    res: int
    bucket: int
    model: str
    deployment: str
    metric: str
    slot: int
    count: int

    def values(self) -> tuple[Any, ...]:
        return (self.res, self.bucket, self.model, self.deployment, self.metric, self.slot, self.count)


ROLLUP_COLUMNS = ("res", "bucket", *ROLLUP_DIMENSIONS, "tags", *ROLLUP_SUMS)
ROLLUP_KEY = ("res", "bucket", *ROLLUP_DIMENSIONS)
LATENCY_COLUMNS = ("res", "bucket", "model", "deployment", "metric", "slot", "count")
LATENCY_KEY = ("res", "bucket", "model", "deployment", "metric", "slot")


def latency_slot(ms: float) -> int:
    """The histogram slot of a latency: 0 below 1 ms, then four per doubling (about ±9 %)."""
    if not ms >= 1.0:  # also NaN
        return 0
    return min(MAX_SLOT, 1 + math.floor(SLOTS_PER_DOUBLING * math.log2(ms)))


def slot_value_ms(slot: int) -> float:
    """The value a slot stands for: the geometric middle of its range."""
    if slot <= 0:
        return 0.5
    return float(2 ** ((slot - 1 + 0.5) / SLOTS_PER_DOUBLING))


def percentile(histogram: dict[int, int], p: float) -> float | None:
    """The ``p`` quantile (0..1) of a slot → count histogram; None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = p * total
    seen = 0
    for slot in sorted(histogram):
        seen += histogram[slot]
        if seen >= rank:
            return slot_value_ms(slot)
    return slot_value_ms(max(histogram))


def rollup_deltas(rows: Iterable[RequestRow]) -> tuple[list[RollupDelta], list[LatencyDelta]]:
    """What ``rows`` add to the rollups, merged per rollup row and sorted by key (so concurrent
    writers lock rows in the same order)."""
    sums: dict[tuple[Any, ...], list[int | float]] = {}
    tags: dict[tuple[Any, ...], str] = {}
    hist: dict[tuple[Any, ...], int] = {}
    for row in rows:
        model, deployment = row.model or "", row.deployment or ""
        row_sums = (
            1,
            1 if row.is_error else 0,
            row.tokens_in,
            row.tokens_out,
            row.tokens_cache_read,
            row.tokens_cache_write,
            row.cost_nano,
            float(row.duration_ms),
            0 if row.ttft_ms is None else 1,
            0.0 if row.ttft_ms is None else float(row.ttft_ms),
        )
        for res in RESOLUTIONS:
            bucket = int(row.created_at // res) * res
            key = (
                res,
                bucket,
                model,
                deployment,
                row.key_id or "",
                row.team_id or "",
                bool(row.local),
                row.route or "",
                row.cache or "",
            )
            acc = sums.get(key)
            if acc is None:
                sums[key] = list(row_sums)
                tags[key] = orjson.dumps(sorted(row.tags)).decode()
            else:
                for i, value in enumerate(row_sums):
                    acc[i] += value
            for metric, ms in (("duration", row.duration_ms), ("ttft", row.ttft_ms)):
                if ms is None:
                    continue
                hkey = (res, bucket, model, deployment, metric, latency_slot(ms))
                hist[hkey] = hist.get(hkey, 0) + 1
    rollups = [
        RollupDelta(
            res=k[0],
            bucket=k[1],
            model=k[2],
            deployment=k[3],
            key_id=k[4],
            team_id=k[5],
            local=k[6],
            route=k[7],
            cache=k[8],
            tags=tags[k],
            sums=tuple(values),
        )
        for k, values in sorted(sums.items(), key=lambda kv: _sort_key(kv[0]))
    ]
    latencies = [
        LatencyDelta(res=k[0], bucket=k[1], model=k[2], deployment=k[3], metric=k[4], slot=k[5], count=n)
        for k, n in sorted(hist.items())
    ]
    return rollups, latencies


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(str(part) if isinstance(part, bool) else part for part in key)
