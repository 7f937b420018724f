"""Store throughput: reservations + settlements per second (not a test; prints numbers).

    .venv/bin/python -m tests.store.bench_store                      # SQLite
    MODELYARD_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python -m tests.store.bench_store                  # and PostgreSQL

Two runs per backend:

* closed loop: 64 clients, each reserve -> settle as fast as it can (peak throughput);
* open loop: requests arrive at a fixed 2,000/s for 5 s (each reserve, then settle); reports
  whether the settlement backlog stays flat and the reserve latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from modelyard.store.base import Scope, Store
from tests.store._support import PG_ENV, USD, Backend, make_budget, reservation, settlement, unique

BUDGETS = ((Scope.KEY, "k1"), (Scope.TEAM, "team-a"), (Scope.USER, "user-a"))


async def prepare(store: Store) -> None:
    for scope, scope_id in BUDGETS:
        await make_budget(store, scope, scope_id, 10**6 * USD)


async def one(store: Store, latencies: list[float]) -> None:
    request_id = unique("b")
    start = time.perf_counter()
    denied = await store.reserve(reservation(request_id, 1000, BUDGETS, created_at=time.time()))
    latencies.append(time.perf_counter() - start)
    assert denied is None
    await store.settle(settlement(request_id, 700, created_at=time.time()))


async def closed_loop(store: Store, clients: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> int:
        n = 0
        while time.perf_counter() < stop:
            await one(store, latencies)
            n += 1
        return n

    start = time.perf_counter()
    done = sum(await asyncio.gather(*(client() for _ in range(clients))))
    await store.flush()
    return done / (time.perf_counter() - start), latencies


async def open_loop(store: Store, rate: float, seconds: float) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    backlog: list[int] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            task = asyncio.create_task(one(store, latencies))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        backlog.append(getattr(store, "queued_settlements", 0) + len(tasks))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    await store.flush()
    return sent / (time.perf_counter() - start), latencies, backlog


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 100 else float("nan")


async def bench(backend: Backend, seconds: float) -> None:
    store = await backend.open()
    try:
        await prepare(store)
        rate, lat = await closed_loop(store, 64, seconds)
        print(
            f"{backend.kind:8} closed loop, 64 clients: {rate:8.0f} reserve+settle/s  "
            f"reserve p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms"
        )
        rate, lat, backlog = await open_loop(store, 2000, seconds)
        half = len(backlog) // 2
        first, second = statistics.mean(backlog[:half]), statistics.mean(backlog[half:])
        print(
            f"{backend.kind:8} open loop at 2000/s: {rate:8.0f} /s achieved  "
            f"reserve p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms  "
            f"in flight+queued: mean 1st half {first:.0f}, 2nd half {second:.0f}, max {max(backlog)}"
        )
    finally:
        await store.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await bench(Backend("sqlite", os.path.join(tmp, "bench.db")), args.seconds)
    dsn = os.environ.get(PG_ENV)
    if dsn:
        import asyncpg

        schema = f"modelyard_bench_{os.getpid()}"
        try:
            await bench(Backend("postgres", dsn, schema), args.seconds)
        finally:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    else:
        print(f"postgres skipped: set {PG_ENV} to include it")


if __name__ == "__main__":
    asyncio.run(main())
