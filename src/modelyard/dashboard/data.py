"""What each dashboard page shows, read from the store: SQL sums over the rollups, percentiles
from the latency histograms, the router's live state and the budgets."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.store.base import Store
from modelyard.store.requestlog import RollupQuery, Visibility, percentile, resolution_for


@dataclass(frozen=True, slots=True)
class Window:
    """A time range the dashboard shows: [since, until) at rollup resolution ``res``."""

    name: str
    since: float
    until: float
    res: int

    @classmethod
    def last(cls, name: str, span_s: float, now: float | None = None) -> Window:
        until = time.time() if now is None else now
        return cls(name, until - span_s, until, resolution_for(span_s))

    def buckets(self) -> list[int]:
        first = int(self.since // self.res) * self.res
        return list(range(first, int(self.until) + 1, self.res))

    def query(self, *group_by: str, visibility: Visibility) -> RollupQuery:
        return RollupQuery(self.since, self.until, tuple(group_by), self.res, visibility)


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_nano: int = 0
    duration_ms_sum: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: dict[str, Any] | None) -> Totals:
        if not row:
            return cls()
        return cls(
            int(row["requests"]),
            int(row["errors"]),
            int(row["tokens_in"]),
            int(row["tokens_out"]),
            int(row["cost_nano"]),
            float(row["duration_ms_sum"]),
        )

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


async def totals(store: Store, window: Window, visibility: Visibility) -> Totals:
    rows = await store.request_rollup(window.query(visibility=visibility))
    return Totals.of(rows[0] if rows else None)


async def grouped(
    store: Store, window: Window, visibility: Visibility, *group_by: str
) -> list[dict[str, Any]]:
    return await store.request_rollup(window.query(*group_by, visibility=visibility))


async def series(
    store: Store, window: Window, visibility: Visibility, *, by: str | None = None
) -> tuple[list[int], dict[str, dict[int, dict[str, Any]]]]:
    """Per-bucket sums (optionally split by one dimension): (bucket starts, {split: {bucket: row}})."""
    group = ("bucket", by) if by else ("bucket",)
    rows = await store.request_rollup(window.query(*group, visibility=visibility))
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        out[str(row.get(by, "")) if by else ""][int(row["bucket"])] = row
    return window.buckets(), out


def values(
    buckets: list[int], rows: dict[int, dict[str, Any]], field_name: str, per: float = 1.0
) -> list[float]:
    return [float(rows.get(b, {}).get(field_name, 0)) / per for b in buckets]


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


async def latencies(store: Store, window: Window) -> dict[tuple[str, str], Latency]:
    """p50/p95 of duration and TTFT per (model, deployment), from the histograms."""
    hist: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
    for model, deployment, metric, slot, count in await store.request_latency(
        window.since, window.until, window.res
    ):
        hist[(model, deployment, metric)][int(slot)] = int(count)
    out = {}
    for model, deployment in {(m, d) for m, d, _ in hist}:
        dur = hist.get((model, deployment, "duration"), {})
        ttft = hist.get((model, deployment, "ttft"), {})
        out[(model, deployment)] = Latency(
            percentile(dur, 0.5), percentile(dur, 0.95), percentile(ttft, 0.5), percentile(ttft, 0.95)
        )
    return out


def by_tag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rollup rows grouped by ``tags`` (a JSON list) → one row per tag (a request counts once per
    tag it carries)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        for tag in orjson.loads(row["tags"] or "[]") or ["(none)"]:
            acc = out.setdefault(tag, {"tag": tag, "requests": 0, "tokens": 0, "cost_nano": 0})
            acc["requests"] += row["requests"]
            acc["tokens"] += row["tokens_in"] + row["tokens_out"]
            acc["cost_nano"] += row["cost_nano"]
    return sorted(out.values(), key=lambda r: (-r["cost_nano"], r["tag"]))
