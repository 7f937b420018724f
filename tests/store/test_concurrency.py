"""RELIABILITY 5.C/5.D under concurrency: C1 (barrier race), C2 (two processes), C3 (first-use
race), D4 (two writing processes, no lock errors)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os

from modelyard.store.base import BudgetSpec, Denied, Period, Scope
from tests.store._support import CENT, USD, Backend, make_budget, reservation, spend_of
from tests.store._workers import barrier_race, contend_child, race_child, race_in_two_processes

REPS = 100
CLIENTS = 64
LIMIT = USD  # $1.00 with a max cost of $0.01: 100 requests fit


def check_race(spend: int, reserved: int, admitted: int) -> None:
    assert reserved == 0
    assert spend == admitted * CENT
    assert spend <= LIMIT + CENT, f"overshoot: spend {spend} > budget {LIMIT} + max cost {CENT}"
    assert spend >= 0.98 * LIMIT, f"false rejections: utilisation {spend / LIMIT:.1%} < 98%"


async def test_c1_barrier_race_never_overshoots(backend: Backend) -> None:
    """C1: 64 clients released together against $1.00, max cost $0.01, 100 repetitions."""
    store = await backend.open()
    try:
        for rep in range(REPS):
            await make_budget(store, Scope.KEY, f"c1-{rep}", LIMIT)
        for rep in range(REPS):
            budgets = ((Scope.KEY, f"c1-{rep}"),)
            admitted = await barrier_race(store, budgets, CLIENTS, f"c1-{rep}")
            check_race(*await spend_of(store, Scope.KEY, f"c1-{rep}"), admitted)
    finally:
        await store.aclose()


async def test_c2_two_processes_share_the_budget(backend: Backend) -> None:
    """C2: the C1 race from 2 OS processes (own stores, same database): not budget × replicas."""
    store = await backend.open()
    try:
        for rep in range(REPS):
            await make_budget(store, Scope.KEY, f"c2-{rep}", LIMIT)
        admitted = await race_in_two_processes(race_child, backend, REPS, CLIENTS // 2)
        for rep in range(REPS):
            total = admitted["p1"][rep] + admitted["p2"][rep]
            check_race(*await spend_of(store, Scope.KEY, f"c2-{rep}"), total)
        # Both processes really took part (the race was shared, not run one after the other).
        assert sum(admitted["p1"]) > 0 and sum(admitted["p2"]) > 0
    finally:
        await store.aclose()


async def test_c3_first_use_race_of_new_user(backend: Backend) -> None:
    """C3: 8 concurrent first requests of a brand-new user, each creating the default budget."""
    store = await backend.open()
    limit = 5 * CENT
    try:
        for rep in range(REPS):
            user = f"new-user-{rep}"
            go = asyncio.Event()

            async def first_request(i: int, user: str = user, go: asyncio.Event = go) -> bool:
                await go.wait()
                await store.set_budget(BudgetSpec(Scope.USER, user, Period.DAILY, limit))
                denied = await store.reserve(reservation(f"{user}-{i}", CENT, ((Scope.USER, user),)))
                return not isinstance(denied, Denied)

            tasks = [asyncio.create_task(first_request(i)) for i in range(8)]
            await asyncio.sleep(0)
            go.set()
            admitted = sum(await asyncio.gather(*tasks))
            spend, reserved = await spend_of(store, Scope.USER, user, Period.DAILY)
            assert spend + reserved == admitted * CENT <= limit
            assert admitted == 5
    finally:
        await store.aclose()


async def test_d4_two_writing_processes_no_lock_errors(backend: Backend) -> None:
    """D4: two processes reserving and settling at full speed on one database: 0 errors."""
    count = 1_000
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "d4", 10**6 * USD)
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        children = [
            ctx.Process(target=contend_child, args=(backend, count, 16, results, name))
            for name in ("w1", "w2")
        ]
        for child in children:
            child.start()
        try:
            errors = dict(await asyncio.to_thread(lambda: [results.get(timeout=120) for _ in children]))
        finally:
            for child in children:
                await asyncio.to_thread(child.join, 30)
        assert errors == {"w1": [], "w2": []}
        rows = await store.ledger_rows(since=0, limit=10 * count)
        assert len(rows) == 2 * count
        assert await spend_of(store, Scope.KEY, "d4") == (sum(r.cost_nano for r in rows), 0)
        assert all(child.exitcode == 0 for child in children), os.strerror(0)
    finally:
        await store.aclose()
