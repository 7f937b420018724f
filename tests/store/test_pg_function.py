"""The server-side batch function decides and writes exactly what ``plan_batch`` does.

Random batches — reservations (repeated, already stored, zero-cost, over budget, on keys without a
budget), settlements (duplicated, of unknown or settled requests, rows seen before), budget periods
rolling over midnight and month ends — go through a store on the Python path and a store on the
function, each in its own schema, from the same start. After every batch both must have returned
the same decisions and settled count, and hold the same tables, row for row.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from modelyard.store._batch import CommitResult
from modelyard.store.base import Period, Reservation, Scope, Settlement
from modelyard.store.postgres import PostgresStore
from tests.store._support import CENT, Backend, attempt, make_budget, reservation

SCOPES = ((Scope.KEY, "k0"), (Scope.KEY, "k1"), (Scope.TEAM, "t0"), (Scope.USER, "u0"), (Scope.KEY, "none"))
DAY = 86_400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def dump(store: PostgresStore) -> dict[str, list[tuple[Any, ...]]]:
    s = f'"{store.schema}"'
    pool = store._require_pool()
    out = {}
    for table, order in (
        ("budgets", "scope, scope_id, period"),
        ("reservations", "request_id"),
        ("ledger", "request_id, attempt"),
    ):
        out[table] = [tuple(row) for row in await pool.fetch(f"SELECT * FROM {s}.{table} ORDER BY {order}")]
    return out


def random_batch(
    rng: random.Random, batch: int, known: list[str]
) -> tuple[list[Reservation], list[Settlement]]:
    reserves: list[Reservation] = []
    for i in range(rng.randrange(0, 12)):
        roll = rng.random()
        if roll < 0.15 and known:
            request_id = rng.choice(known)  # reserved (or tried) before
        elif roll < 0.25 and reserves:
            request_id = rng.choice(reserves).request_id  # twice in one batch
        else:
            request_id = f"r{batch}-{i}"
        budgets = tuple(rng.sample(SCOPES, rng.randrange(0, 4)))
        cost = rng.choice((0, CENT, 3 * CENT, 7 * CENT, 20 * CENT))
        reserves.append(reservation(request_id, cost, budgets, created_at=1_000.0 + batch))
    settlements: list[Settlement] = []
    for i in range(rng.randrange(0, 10)):
        roll = rng.random()
        if roll < 0.6 and known:
            request_id = rng.choice(known)
        elif roll < 0.7 and reserves:
            request_id = rng.choice(reserves).request_id  # reserved in the same batch
        elif roll < 0.8 and settlements:
            request_id = rng.choice(settlements).request_id  # settled twice in one batch
        else:
            request_id = f"anon{batch}-{i}"
        rows = tuple(
            attempt(
                request_id,
                rng.choice((0, 1, CENT, 2 * CENT, 9 * CENT)),
                attempt_no=rng.choice((1, 1, 2, 3)),
                tags=tuple(rng.sample(("a", "b", "c d", "é"), rng.randrange(0, 3))),
                local=rng.random() < 0.3,
                created_at=1_000.0 + batch + i / 100,
            )
            for _ in range(rng.randrange(0, 4))
        )
        settlements.append(Settlement(request_id, rows))
    return reserves, settlements


@pytest.mark.parametrize("seed", range(8))
async def test_function_matches_plan_batch(backend: Backend, seed: int) -> None:
    if backend.kind != "postgres":
        pytest.skip("the server-side function is PostgreSQL's")
    rng = random.Random(seed)
    # 2 days before a month end, 3 hours before midnight: batches cross both.
    clock = Clock(1_735_430_400.0 - 3 * 3600)
    python = PostgresStore(backend.target, schema=backend.schema, clock=clock, server_side_commit=False)
    function = PostgresStore(backend.target, schema=backend.schema + "_fn", clock=clock, pool_size=4)
    await python.open()
    await function.open()
    try:
        budgets = [
            (scope, scope_id, rng.choice((5, 30, 100)) * CENT, period)
            for scope, scope_id in SCOPES[:4]
            for period in Period
            if rng.random() < 0.8
        ]
        for store in (python, function):
            for scope, scope_id, limit, period in budgets:
                await make_budget(store, scope, scope_id, limit, period)
        known: list[str] = []
        for batch in range(30):
            clock.now += rng.choice((1.0, 60.0, 3600.0, DAY / 2))
            reserves, settlements = random_batch(rng, batch, known)
            results: list[CommitResult] = []
            for store in (python, function):
                results.append(await store._commit(list(reserves), list(settlements), None, "settle"))
            assert results[0] == results[1], f"seed {seed} batch {batch}: decisions differ"
            assert await dump(python) == await dump(function), f"seed {seed} batch {batch}: tables differ"
            known += [r.request_id for r in reserves]
        # The scenario really exercised the rules (not a run of no-ops).
        final = await dump(function)
        assert any(row[1] == "settled" for row in final["reservations"])
        assert any(row[1] == "pending" for row in final["reservations"])
        assert final["ledger"]
    finally:
        await python.aclose()
        await function.aclose()
        await _drop(backend, backend.schema + "_fn")


async def _drop(backend: Backend, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(backend.target)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_denials_counted(backend: Backend) -> None:
    """The random scenarios above include denials; this pins one down by value."""
    if backend.kind != "postgres":
        pytest.skip("the server-side function is PostgreSQL's")
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "d", 10 * CENT)
        first = reservation("a", 6 * CENT, ((Scope.KEY, "d"),))
        second = reservation("b", 6 * CENT, ((Scope.KEY, "d"),))
        assert isinstance(store, PostgresStore)
        result = await store._commit([first, second], [], None, "reserve")
        assert result.decisions[0] is None
        denied = result.decisions[1]
        assert denied is not None
        assert (denied.spec.scope, denied.spec.scope_id, denied.spec.limit_nano) == (
            Scope.KEY,
            "d",
            10 * CENT,
        )
        assert (denied.spend_nano, denied.reserved_nano) == (0, 6 * CENT)
    finally:
        await store.aclose()
