"""RELIABILITY 5.D: kill -9 during writes (D1), kill -9 with reservations in flight (D2), the
database locked or its connections cut (D3).

D1 runs 5 kill cycles per backend in CI; ``MODELYARD_STRESS=1`` runs the full 50.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.store.base import Scope, Store
from tests.store._support import CENT, STRESS, USD, Backend, make_budget, reservation, settlement, spend_of
from tests.store._workers import reserve_then_hang, settle_until_killed


async def raw(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    """Query the database behind the store's back; ``{t}`` is where the tables live."""
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.target) as conn:
            return conn.execute(sql.format(t="")).fetchall()
    import asyncpg

    conn = await asyncpg.connect(backend.target)
    try:
        return [tuple(r) for r in await conn.fetch(sql.format(t=f'"{backend.schema}".'))]
    finally:
        await conn.close()


def acked_lines(path: Path) -> list[str]:
    text = path.read_text()
    return text.split("\n")[:-1]  # a last line without its newline was not acknowledged


def kill_when(child: Any, ack: Path, lines: int) -> None:
    """SIGKILL ``child`` once ``ack`` holds ``lines`` acknowledged lines (polled from a thread)."""
    deadline = time.monotonic() + 60
    while child.is_alive() and len(acked_lines(ack)) < lines and time.monotonic() < deadline:
        time.sleep(0.002)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join(30)


async def test_d1_kill9_during_settlements_loses_nothing(backend: Backend, tmp_path: Path) -> None:
    cycles = 50 if STRESS else 5
    rng = random.Random()
    store = await backend.open()
    await make_budget(store, Scope.KEY, "d1", 10**6 * USD)
    await store.aclose()
    ctx = multiprocessing.get_context("spawn")
    acked: dict[str, int] = {}
    for cycle in range(cycles):
        ack = tmp_path / f"acks-{cycle}.txt"
        ack.touch()
        child = ctx.Process(target=settle_until_killed, args=(backend, 1_000, 16, str(ack)))
        child.start()
        await asyncio.to_thread(kill_when, child, ack, rng.randrange(1_000))
        for line in acked_lines(ack):
            request_id, cost = line.split()
            acked[request_id] = int(cost)

        store = await backend.open()
        try:
            rows = await raw(backend, "SELECT request_id, cost_nano FROM {t}ledger WHERE key_id = 'd1'")
            per_request = Counter(request_id for request_id, _ in rows)
            costs = dict(rows)
            lost = [rid for rid in acked if rid not in costs]
            assert not lost, f"cycle {cycle}: {len(lost)} acknowledged settlements lost"
            assert all(costs[rid] == cost for rid, cost in acked.items())
            assert max(per_request.values(), default=1) == 1, "duplicate ledger rows"
            pending = await raw(
                backend, "SELECT SUM(max_cost_nano) FROM {t}reservations WHERE status = 'pending'"
            )
            spend, reserved = await spend_of(store, Scope.KEY, "d1")
            assert spend == sum(cost for _, cost in rows)
            assert reserved == (pending[0][0] or 0)
            if backend.kind == "sqlite":
                assert await raw(backend, "PRAGMA integrity_check") == [("ok",)]
        finally:
            await store.aclose()
    assert len(acked) > 0


async def test_d2_kill9_with_reservations_in_flight(backend: Backend, tmp_path: Path) -> None:
    store = await backend.open()
    await make_budget(store, Scope.KEY, "d2", 100 * USD)
    await store.aclose()
    ack = tmp_path / "acks.txt"
    ack.touch()
    deadline = time.time() + 1.0
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=reserve_then_hang, args=(backend, 32, str(ack), deadline))
    child.start()
    await asyncio.to_thread(kill_when, child, ack, 32)
    assert len(acked_lines(ack)) == 32

    store = await backend.open()
    try:
        assert await spend_of(store, Scope.KEY, "d2") == (0, 32 * 3 * CENT)
        assert await store.recover_pending(now=deadline - 0.5) == 0  # not overdue yet
        assert await store.recover_pending(now=deadline + 1.0) == 32
        assert await raw(backend, "SELECT COUNT(*) FROM {t}reservations WHERE status = 'pending'") == [(0,)]
        assert await spend_of(store, Scope.KEY, "d2") == (32 * 3 * CENT, 0)  # charged = reserved
        rows = await store.ledger_rows(since=0, limit=100)
        assert len(rows) == 32 and {r.status for r in rows} == {"recovered"}
    finally:
        await store.aclose()


async def settle_while_blocked(
    store: Store, block: Callable[[], object], blocked: threading.Event, released: threading.Event
) -> None:
    """Reserve 1,000 requests, call ``block()`` (locks the database for ~2 s), settle them all
    while it is locked, then check that every one was written once the lock was gone."""
    await make_budget(store, Scope.KEY, "d3", 100 * USD)
    ids = [f"d3-{i}" for i in range(1_000)]
    decisions = await asyncio.gather(
        *(store.reserve(reservation(i, CENT, ((Scope.KEY, "d3"),))) for i in ids)
    )
    assert decisions == [None] * len(ids)
    block()
    await asyncio.to_thread(blocked.wait, 10)
    for i, request_id in enumerate(ids):
        await store.settle(settlement(request_id, CENT - i % 3))
    late = asyncio.create_task(store.reserve(reservation("d3-late", CENT, ((Scope.KEY, "d3"),))))
    await asyncio.sleep(0.5)
    assert not released.is_set()
    assert store.queued_settlements > 0  # type: ignore[attr-defined]  # waiting, not dropped
    await store.flush()
    assert released.is_set()
    assert await late is None  # the admission waited for the lock; no "database is locked"
    rows = await store.ledger_rows(since=0, limit=10_000)
    assert len({r.request_id for r in rows}) == 1_000
    expected = sum(CENT - i % 3 for i in range(1_000))
    assert await spend_of(store, Scope.KEY, "d3") == (expected, CENT)


async def test_d3_sqlite_exclusive_lock_queues_settlements(tmp_path: Path) -> None:
    backend = Backend("sqlite", str(tmp_path / "d3.db"))
    store = await backend.open(busy_timeout_ms=100)  # so commits fail busy and are retried
    blocked, released = threading.Event(), threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(backend.target, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        blocked.set()
        time.sleep(2.0)
        released.set()
        conn.execute("COMMIT")
        conn.close()

    try:
        holder = threading.Thread(target=hold_lock)
        await settle_while_blocked(store, holder.start, blocked, released)
        holder.join()
        assert store.failed_commits > 0  # type: ignore[attr-defined]
    finally:
        await store.aclose()


async def test_d3_postgres_table_lock_and_lost_connections(backend: Backend) -> None:
    if backend.kind != "postgres":
        pytest.skip("SQLite's D3 is test_d3_sqlite_exclusive_lock_queues_settlements")
    import asyncpg

    store = await backend.open()
    blocked, released = threading.Event(), threading.Event()

    async def hold_lock() -> None:
        conn = await asyncpg.connect(backend.target)
        try:
            async with conn.transaction():
                await conn.execute(f'LOCK TABLE "{backend.schema}".ledger IN ACCESS EXCLUSIVE MODE')
                blocked.set()
                await asyncio.sleep(1.0)
                # Cut the store's connections too, mid-wait: the batch must survive that.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND query LIKE $1",
                    f'%"{backend.schema}".%',
                )
                await asyncio.sleep(1.0)
                released.set()
        finally:
            await conn.close()

    holders: list[asyncio.Task[None]] = []
    try:
        await settle_while_blocked(
            store, lambda: holders.append(asyncio.create_task(hold_lock())), blocked, released
        )
        await holders[0]
        assert store.failed_commits > 0  # type: ignore[attr-defined]  # the cut connection
    finally:
        await store.aclose()
