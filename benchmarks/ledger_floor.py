#!/usr/bin/env python3
"""What a keyed request's accounting costs at one request at a time, part by part, and whether the
SQLite ledger keeps up while the event loop is busy. No gateway, no HTTP: the store and the clients
alone, so each figure is a floor for the gateway's own.

  .venv/bin/python benchmarks/ledger_floor.py              # ~1 min; PostgreSQL/Redis parts skipped if down
  .venv/bin/python benchmarks/ledger_floor.py --requests 5000

Parts (process CPU per request, utime+stime, median of --rounds):

  sqlite reserve+settle   one durable reservation (BEGIN IMMEDIATE … COMMIT, synchronous=FULL, on the
                          store's writer thread) then its settlement, 0.5 ms apart like an upstream call
  sqlite … synchronous=NORMAL   the same without the fsync (durable against kill -9, not power loss)
  handoff executor/thread the event loop → one thread → back: ThreadPoolExecutor(1) vs the store's
                          queue-fed StoreThread, around a function that does nothing
  postgres reserve+settle the same on PostgreSQL (one server-side function call per commit)
  … leased                the same through budget leases (storage.reservations: leased): the request
                          is admitted from a per-process lease in memory and journaled locally; the
                          store sees one reserve and one settle per lease
  asyncpg SELECT 1 / redis PING   one bare round trip of each client, for scale
  busy-loop settlements   20,000 settlements queued while the loop runs Python 90 % of the time (as a
                          saturated gateway's does): how many were still queued when it stopped

Environment: MODELYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test),
MODELYARD_BENCH_REDIS (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests.store helpers

import uvloop  # noqa: E402
from tests.store._support import reservation, settlement, unique  # noqa: E402
from tests.store.bench_store import BUDGETS, prepare  # noqa: E402

from modelyard.policy.leases import LeasedReservations  # noqa: E402
from modelyard.store._thread import StoreThread  # noqa: E402
from modelyard.store.base import Store  # noqa: E402
from modelyard.store.postgres import PostgresStore  # noqa: E402
from modelyard.store.sqlite import SqliteStore  # noqa: E402

PG = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("MODELYARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
GAP_S = 0.0005


async def per_request(n: int, step: Callable[[], Awaitable[object]]) -> float:
    """Process CPU ms per call of ``step`` (each followed by a GAP_S sleep)."""
    for _ in range(min(200, n)):
        await step()
        await asyncio.sleep(GAP_S)
    start = time.process_time()
    for _ in range(n):
        await step()
        await asyncio.sleep(GAP_S)
    return (time.process_time() - start) / n * 1000


async def store_cost(store: Store, n: int) -> float:
    await store.open()
    try:
        await prepare(store)

        async def one() -> None:
            request_id = unique("f")
            await store.reserve(reservation(request_id, 1000, BUDGETS, created_at=time.time()))
            await store.settle(settlement(request_id, 700, created_at=time.time()))

        cost = await per_request(n, one)
        await store.flush()
        return cost
    finally:
        await store.aclose()


async def leased_cost(store: Store, n: int) -> float:
    """:func:`store_cost` through budget leases (journal in a temporary directory)."""
    await store.open()
    leases = LeasedReservations(store, Path(tempfile.mkdtemp(prefix="lease-journal-")))
    leases.start()
    try:
        await prepare(store)

        async def one() -> None:
            request_id = unique("f")
            now = time.time()
            await leases.reserve(
                reservation(request_id, 1000, BUDGETS, created_at=now, deadline_at=now + 660)
            )
            await leases.settle(settlement(request_id, 700, created_at=time.time()))

        return await per_request(n, one)
    finally:
        await leases.aclose()
        await store.aclose()


async def sqlite_cost(n: int, synchronous: str) -> float:
    path = os.path.join(tempfile.mkdtemp(prefix="ledger-floor-"), "ledger.db")
    store = SqliteStore(path)
    if synchronous != "FULL":
        original = store._connect

        def connect(migrate: bool):  # type: ignore[no-untyped-def]
            conn = original(migrate)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            return conn

        store._connect = connect  # type: ignore[method-assign]
    return await store_cost(store, n)


async def handoff_cost(n: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)
    thread = StoreThread("floor")

    def noop() -> int:
        return 1

    try:
        executor = await per_request(n, lambda: loop.run_in_executor(pool, noop))
        queued = await per_request(n, lambda: thread.run(noop))
    finally:
        pool.shutdown()
        await thread.stop()
    return executor, queued


async def pg_costs(n: int) -> dict[str, float]:
    import asyncpg

    out: dict[str, float] = {}
    try:
        conn = await asyncpg.connect(PG, timeout=3)
    except Exception as exc:  # not running here: say so, measure the rest
        print(f"  (PostgreSQL parts skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
        return out
    try:
        out["asyncpg SELECT 1 (one round trip)"] = await per_request(n, lambda: conn.fetchrow("SELECT 1"))
    finally:
        await conn.close()
    schema = f"ledger_floor_{os.getpid()}"
    out["postgres reserve+settle"] = await store_cost(PostgresStore(PG, schema=schema), n)
    out["postgres reserve+settle, leased"] = await leased_cost(PostgresStore(PG, schema=schema), n)
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    return out


async def redis_cost(n: int) -> dict[str, float]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        print(f"  (Redis part skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
        await client.aclose()
        return {}
    try:
        return {"redis-py PING (one round trip)": await per_request(n, client.ping)}
    finally:
        await client.aclose()


async def busy_loop_backlog(total: int = 20_000) -> tuple[int, float]:
    """(settlements still queued when the busy producer stopped, seconds to drain them)."""
    path = os.path.join(tempfile.mkdtemp(prefix="ledger-floor-"), "ledger.db")
    store = SqliteStore(path)
    await store.open()
    try:
        for i in range(total):
            await store.settle(settlement(unique("s"), 700, created_at=time.time()))
            if i % 50 == 0:
                end = time.perf_counter() + 0.0025  # ~90 % of the loop's time is Python work
                while time.perf_counter() < end:
                    pass
                await asyncio.sleep(0)
        queued = store.queued_settlements
        start = time.perf_counter()
        await store.flush()
        return queued, time.perf_counter() - start
    finally:
        await store.aclose()


async def main(args: argparse.Namespace) -> None:
    rows: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        print(f"[ledger_floor] round {rnd + 1}/{args.rounds}", file=sys.stderr)
        rows.setdefault("sqlite reserve+settle (synchronous=FULL)", []).append(
            await sqlite_cost(args.requests, "FULL")
        )
        rows.setdefault("sqlite reserve+settle (synchronous=NORMAL)", []).append(
            await sqlite_cost(args.requests, "NORMAL")
        )
        path = os.path.join(tempfile.mkdtemp(prefix="ledger-floor-"), "ledger.db")
        rows.setdefault("sqlite reserve+settle, leased", []).append(
            await leased_cost(SqliteStore(path), args.requests)
        )
        executor, queued = await handoff_cost(args.requests)
        rows.setdefault("handoff via ThreadPoolExecutor(1)", []).append(executor)
        rows.setdefault("handoff via StoreThread (queue)", []).append(queued)
        for name, value in (await pg_costs(args.requests)).items():
            rows.setdefault(name, []).append(value)
        for name, value in (await redis_cost(args.requests)).items():
            rows.setdefault(name, []).append(value)
    print(
        f"\n{args.requests} requests per part, one at a time, {GAP_S * 1000:.1f} ms apart; {args.rounds} rounds\n"
    )
    print("| part | CPU ms/request (median; rounds) |")
    print("|---|---|")
    for name, values in rows.items():
        each = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | **{statistics.median(values):.3f}** ({each}) |")
    queued, drain = await busy_loop_backlog()
    print(
        f"\nbusy loop: 20,000 settlements queued; {queued:,} still queued when the producer stopped, drained in {drain:.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per part and round (default 2000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    uvloop.run(main(parser.parse_args()))
