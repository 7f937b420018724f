"""The request log in the store, on SQLite and PostgreSQL: writes, idempotence, search filters,
text search, visibility, rollups, latency histograms and the retention purge."""

from __future__ import annotations

import pytest

from modelyard.store.base import KeyRecord, Role
from modelyard.store.requestlog import (
    RequestQuery,
    RollupQuery,
    Visibility,
    latency_slot,
    percentile,
    slot_value_ms,
)
from tests.requestlog._rows import request_row
from tests.store._support import Backend

T0 = 1_000_020.0  # inside one minute bucket and one hour bucket


async def test_rows_round_trip_and_a_replayed_batch_adds_nothing(backend: Backend) -> None:
    store = await backend.open()
    try:
        rows = [
            request_row("r1", created_at=T0, prompt='{"messages": []}', response="hello"),
            request_row(
                "r2", created_at=T0 + 1, status=503, outcome="error", error_type="provider", cost_nano=0
            ),
        ]
        assert await store.write_requests(rows) == 2
        assert await store.write_requests(rows) == 0  # a retried batch: idempotent, rollups unchanged
        found = await store.search_requests(RequestQuery(since=0))
        assert [r.request_id for r in found] == ["r2", "r1"]
        assert found[1].captured and found[1].prompt is None  # lists leave bodies out
        full = await store.request_by_id("r1")
        assert full is not None and full == rows[0].__class__(**{**_fields(rows[0]), "captured": True})
        totals = await store.request_rollup(RollupQuery(0, T0 + 60, (), 60))
        assert totals[0]["requests"] == 2 and totals[0]["errors"] == 1 and totals[0]["cost_nano"] == 1_000
    finally:
        await store.aclose()


def _fields(row: object) -> dict[str, object]:
    return {name: getattr(row, name) for name in row.__slots__}  # type: ignore[attr-defined]


async def test_search_filters_and_text_search(backend: Backend) -> None:
    store = await backend.open()
    try:
        await store.write_requests(
            [
                request_row(
                    "a", created_at=T0, key_id="k1", team_id="t1", model="m1", prompt="the Secret word"
                ),
                request_row(
                    "b", created_at=T0 + 1, key_id="k2", team_id="t2", model="m2", response="50% off_now"
                ),
                request_row(
                    "c",
                    created_at=T0 + 2,
                    key_id="k2",
                    team_id="t2",
                    model="m2",
                    deployment="d2",
                    status=429,
                    outcome="error",
                ),
                request_row(
                    "d",
                    created_at=T0 + 3,
                    key_id="k1",
                    team_id="t1",
                    model="m1",
                    outcome="timeout",
                    status=200,
                    stream=True,
                ),
            ]
        )

        async def ids(**query: object) -> list[str]:
            return [r.request_id for r in await store.search_requests(RequestQuery(**query))]  # type: ignore[arg-type]

        assert await ids(key_id="k1") == ["d", "a"]
        assert await ids(team_id="t2") == ["c", "b"]
        assert await ids(model="m2", deployment="d2") == ["c"]
        assert await ids(status="429") == ["c"]
        assert await ids(status="4xx") == ["c"]
        assert await ids(status="errors") == ["d", "c"]
        assert await ids(status="timeout") == ["d"]
        assert await ids(since=T0 + 1, until=T0 + 3) == ["c", "b"]
        assert await ids(text="secret") == ["a"]  # case-insensitive, prompts only...
        assert await ids(text="% off_") == ["b"]  # ...and answers; % and _ are literal
        assert await ids(text="%") == ["b"]
        assert await ids(text="m1") == []  # never the metadata
        assert await ids(limit=1) == ["d"]
        assert await ids(visibility=Visibility(key_id="k2")) == ["c", "b"]
        assert await ids(visibility=Visibility(team_id="t1")) == ["d", "a"]
        assert await store.request_by_id("a", Visibility(key_id="k2")) is None
        assert await store.request_by_id("'; DROP TABLE requests; --") is None
    finally:
        await store.aclose()


async def test_org_visibility_goes_through_the_key(backend: Backend) -> None:
    store = await backend.open()
    try:
        for key_id, org in (("k1", "org-1"), ("k2", "org-2")):
            await store.insert_key(
                KeyRecord(
                    id=key_id, hash=key_id * 8, hint=key_id, role=Role.KEY_HOLDER, org_id=org, created_at=1
                )
            )
        await store.write_requests([request_row("a", key_id="k1"), request_row("b", key_id="k2")])
        found = await store.search_requests(RequestQuery(visibility=Visibility(org_id="org-2")))
        assert [r.request_id for r in found] == ["b"]
        rollup = await store.request_rollup(
            RollupQuery(0, 2_000_000, ("key_id",), 3600, Visibility(org_id="org-1"))
        )
        assert [(r["key_id"], r["requests"]) for r in rollup] == [("k1", 1)]
    finally:
        await store.aclose()


async def test_rollups_group_by_every_dimension_and_time(backend: Backend) -> None:
    store = await backend.open()
    try:
        await store.write_requests(
            [
                request_row("a", created_at=T0, local=True, route="primary", tags=("x", "y"), cost_nano=5),
                request_row(
                    "b", created_at=T0 + 70, local=False, route="fallback:m2", tags=("y",), cost_nano=7
                ),
                request_row("c", created_at=T0 + 3600, cache="hit", ttft_ms=40.0, stream=True, cost_nano=11),
            ]
        )
        by_local = await store.request_rollup(RollupQuery(0, T0 + 7200, ("local",), 3600))
        assert {r["local"]: r["requests"] for r in by_local} == {True: 1, False: 2}
        by_bucket = await store.request_rollup(RollupQuery(T0, T0 + 7200, ("bucket",), 60))
        assert [r["requests"] for r in by_bucket] == [1, 1, 1]
        by_route = await store.request_rollup(RollupQuery(0, T0 + 7200, ("route",), 3600))
        assert {r["route"]: r["cost_nano"] for r in by_route} == {"fallback:m2": 7, "primary": 16}
        by_tags = await store.request_rollup(RollupQuery(0, T0 + 7200, ("tags", "cache"), 3600))
        assert {(r["tags"], r["cache"]): r["requests"] for r in by_tags} == {
            ('["alpha"]', "hit"): 1,
            ('["x","y"]', ""): 1,
            ('["y"]', ""): 1,
        }
        hist = await store.request_latency(0, T0 + 7200, 3600)
        ttft = [row for row in hist if row[2] == "ttft"]
        assert [(row[3], row[4]) for row in ttft] == [(latency_slot(40.0), 1)]
        with pytest.raises(ValueError, match="cannot group"):
            await store.request_rollup(RollupQuery(0, 1, ("prompt; DROP TABLE x",), 60))
    finally:
        await store.aclose()


async def test_retention_purge_deletes_old_rows_and_rollups_only(backend: Backend) -> None:
    store = await backend.open()
    try:
        old = [request_row(f"old{i}", created_at=T0 + i) for i in range(7)]
        new = [request_row("new", created_at=T0 + 10 * 86400)]
        await store.write_requests(old + new)
        assert await store.purge_requests(T0 + 86400) == 7
        assert [r.request_id for r in await store.search_requests(RequestQuery())] == ["new"]
        rollups = await store.request_rollup(RollupQuery(0, T0 + 20 * 86400, (), 3600))
        assert rollups[0]["requests"] == 1
        assert await store.purge_requests(T0 + 86400) == 0
    finally:
        await store.aclose()


def test_latency_histogram_percentiles_are_within_ten_percent() -> None:
    values = [float(v) for v in range(1, 2001)]
    hist: dict[int, int] = {}
    for value in values:
        hist[latency_slot(value)] = hist.get(latency_slot(value), 0) + 1
    for p, exact in ((0.5, 1000.0), (0.95, 1900.0)):
        got = percentile(hist, p)
        assert got is not None and abs(got - exact) / exact < 0.1
    assert percentile({}, 0.5) is None
    assert slot_value_ms(latency_slot(0.2)) == 0.5


async def test_long_ranges_read_whole_days_from_daily_rollups_and_stay_exact(backend: Backend) -> None:
    store = await backend.open()
    try:
        start = 1_700_000_000.0
        rows = [request_row(f"r{i}", created_at=start + i * 3037.0, cost_nano=i) for i in range(300)]
        await store.write_requests(rows)
        since, until = start + 5_000, start + 7 * 86400 + 123
        ranges = RollupQuery(since, until, (), 3600).ranges()
        assert [r[0] for r in ranges] == [3600, 86400, 3600]
        # Edge buckets count whole: from the hour holding ``since`` to the end of the one holding ``until``.
        first, end = int(since // 3600) * 3600, -(-int(until) // 3600) * 3600
        expected = [r for r in rows if first <= r.created_at < end]
        (total,) = await store.request_rollup(RollupQuery(since, until, (), 3600))
        assert total["requests"] == len(expected) and total["cost_nano"] == sum(r.cost_nano for r in expected)
        series = await store.request_rollup(RollupQuery(since, until, ("bucket",), 3600))
        assert {r["bucket"] % 3600 for r in series} == {0} and sum(r["requests"] for r in series) == len(
            expected
        )
    finally:
        await store.aclose()


async def test_text_search_reads_only_the_newest_captured_rows(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.store import _requestlog_sql

    monkeypatch.setattr(_requestlog_sql, "TEXT_SCAN_LIMIT", 2)
    store = await backend.open()
    try:
        await store.write_requests(
            [request_row(f"r{i}", created_at=T0 + i, prompt=f"needle {i}") for i in range(3)]
            + [request_row("plain", created_at=T0 + 10)]  # not captured: not counted in the scan
        )
        found = await store.search_requests(RequestQuery(text="needle"))
        assert [r.request_id for r in found] == ["r2", "r1"]
    finally:
        await store.aclose()
