"""The group-commit writers: admissions never wait for a settlement batch, settlements linger to
share commits (and ride on reservation commits), and nothing queued is lost or reordered — through a
failed commit, a flush, or closing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelyard.store import _batch
from modelyard.store._batch import CommitResult, Lane
from modelyard.store.base import Reservation, Scope, Settlement
from modelyard.store.sqlite import SqliteStore
from tests.store._support import CENT, USD, make_budget, reservation, settlement, unique

BUDGET = ((Scope.KEY, "k"),)


class Recorder:
    """Wraps a store's ``_commit``: records every commit's lane and contents; can hold one lane's
    commits until released, or fail the next commits of a lane."""

    def __init__(self, store: SqliteStore) -> None:
        self.inner = store._commit
        self.commits: list[tuple[Lane, list[str], list[str]]] = []
        self.hold: dict[Lane, asyncio.Event] = {}
        self.failures: dict[Lane, int] = {}
        store._commit = self  # type: ignore[method-assign]

    async def __call__(
        self,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
        lane: Lane,
    ) -> CommitResult:
        if lane in self.hold:
            await self.hold[lane].wait()
        if self.failures.get(lane, 0) > 0:
            self.failures[lane] -= 1
            raise sqlite3.OperationalError("database is locked (injected)")
        result = await self.inner(reserves, settlements, recover_before, lane)
        self.commits.append((lane, [r.request_id for r in reserves], [s.request_id for s in settlements]))
        return result

    def settled(self) -> list[str]:
        return [request_id for _, _, settled in self.commits for request_id in settled]


async def opened(tmp_path: Path, concurrent: bool = False) -> tuple[SqliteStore, Recorder]:
    """A SQLite store; ``concurrent``: with PostgreSQL's two writers (a reservation lane and a
    settlement lane) instead of SQLite's one (SQLite's thread still runs one commit at a time)."""
    store = SqliteStore(str(tmp_path / "ledger.db"))
    store.concurrent_commits = concurrent
    await store.open()
    await make_budget(store, Scope.KEY, "k", 100 * USD)
    return store, Recorder(store)


async def test_a_reservation_does_not_wait_for_a_settlement_commit(tmp_path: Path) -> None:
    store, recorder = await opened(tmp_path, concurrent=True)
    try:
        recorder.hold["settle"] = asyncio.Event()
        for _ in range(_batch.SETTLE_BATCH):  # a full batch: the settlement lane commits at once
            await store.settle(settlement(unique("s"), CENT))
        await asyncio.sleep(0.05)
        assert store.queued_settlements == _batch.SETTLE_BATCH  # held in its commit
        denied = await asyncio.wait_for(store.reserve(reservation(unique("r"), CENT, BUDGET)), 5)
        assert denied is None
        assert [lane for lane, _, _ in recorder.commits] == ["reserve"]
        recorder.hold["settle"].set()
        await asyncio.wait_for(store.flush(), 5)
        assert store.queued_settlements == 0
    finally:
        await store.aclose()


async def test_settlements_linger_and_share_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_batch, "SETTLE_LINGER_S", 0.2)  # long enough for a busy machine
    store, recorder = await opened(tmp_path)
    try:
        first, second = unique("s"), unique("s")
        await store.settle(settlement(first, CENT))
        for _ in range(5):  # let the settlement writer run: it waits for company, not commits
            await asyncio.sleep(0)
        assert recorder.commits == []
        await store.settle(settlement(second, CENT))
        for _ in range(100):  # the linger is bounded: committed without a flush
            if recorder.commits:
                break
            await asyncio.sleep(0.05)
        assert recorder.commits == [("settle", [], [first, second])]
    finally:
        await store.aclose()


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-writer", "two-writers"])
async def test_a_settlement_rides_on_the_next_reservation_commit(tmp_path: Path, concurrent: bool) -> None:
    store, recorder = await opened(tmp_path, concurrent)
    try:
        earlier, request = unique("s"), unique("r")
        await store.settle(settlement(earlier, CENT))
        assert await store.reserve(reservation(request, CENT, BUDGET)) is None
        assert recorder.commits == [("reserve", [request], [earlier])]
        assert store.queued_settlements == 0
    finally:
        await store.aclose()


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-writer", "two-writers"])
async def test_a_failed_commit_loses_and_reorders_nothing(tmp_path: Path, concurrent: bool) -> None:
    store, recorder = await opened(tmp_path, concurrent)
    try:
        recorder.failures = {"reserve": 1, "settle": 2}
        ids = [unique("s") for _ in range(200)]
        for request_id in ids[:100]:
            await store.settle(settlement(request_id, CENT))
        reserved = asyncio.create_task(store.reserve(reservation(unique("r"), CENT, BUDGET)))
        for request_id in ids[100:]:
            await store.settle(settlement(request_id, CENT))
        await asyncio.wait_for(store.flush(), 10)
        assert await asyncio.wait_for(reserved, 10) is None
        assert sorted(recorder.settled()) == sorted(ids)  # each once
        assert store.failed_commits == 3
        rows = await store.ledger_rows(since=0, limit=1_000)
        assert sorted(r.request_id for r in rows) == sorted(ids)
        # Retried in their place: each commit's settlements are in arrival order.
        position = {request_id: n for n, request_id in enumerate(ids)}
        for _, _, settled in recorder.commits:
            assert [position[i] for i in settled] == sorted(position[i] for i in settled)
    finally:
        await store.aclose()


async def test_closing_flushes_lingering_settlements(tmp_path: Path) -> None:
    store, _ = await opened(tmp_path)
    ids = [unique("s") for _ in range(10)]
    for request_id in ids:
        await store.settle(settlement(request_id, CENT))
    await store.aclose()
    reopened = SqliteStore(str(tmp_path / "ledger.db"))
    await reopened.open()
    try:
        rows: list[Any] = await reopened.ledger_rows(since=0, limit=100)
        assert sorted(r.request_id for r in rows) == sorted(ids)
    finally:
        await reopened.aclose()
