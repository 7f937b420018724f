"""C8 for budget leases: random admissions, settlements, clock jumps (retire, split), flushes and
restarts (``kill``: the in-flight requests are abandoned and the next instance replays the journal)
against a real store, checking the ledger invariants after every step and at the end.

Invariants: spend + reserved ≤ limit on every budget at every step (a lease never admits past a
budget); at the end nothing is reserved, every admitted request has exactly one ledger row (its
real one, or ``recovered`` at its maximum if a restart cut it off), and every budget's spend is the
sum of its rows.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from modelyard.policy.leases import LeasedReservations
from modelyard.store.base import Scope, Store
from tests.store._support import CENT, Backend, make_budget, reservation, settlement, spend_of

KEYS = ("m1", "m2")
KEY_LIMIT = 40 * CENT
TEAM_LIMIT = 60 * CENT
STEPS = 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def check_limits(store: Store) -> None:
    for key in KEYS:
        spend, reserved = await spend_of(store, Scope.KEY, key)
        assert spend + reserved <= KEY_LIMIT
    spend, reserved = await spend_of(store, Scope.TEAM, "team-a")
    assert spend + reserved <= TEAM_LIMIT


@pytest.mark.parametrize("seed", range(10))
async def test_random_leases_keep_the_ledger_exact(backend: Backend, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = await backend.open()
    journal = tmp_path / "journal"
    clock = Clock()

    def instance() -> LeasedReservations:
        return LeasedReservations(store, journal, max_age_s=0.5, clock=clock)

    for key in KEYS:
        await make_budget(store, Scope.KEY, key, KEY_LIMIT)
    await make_budget(store, Scope.TEAM, "team-a", TEAM_LIMIT)
    leases = instance()
    in_flight: dict[str, tuple[str, int]] = {}
    finished: dict[str, tuple[str, int]] = {}  # request -> (key, cost charged)
    abandoned: dict[str, tuple[str, int]] = {}
    try:
        for step in range(STEPS):
            action = rng.choices(
                ["admit", "settle", "clock", "tick", "flush", "restart"], [8, 6, 2, 2, 1, 1]
            )[0]
            if action == "admit":
                key = rng.choice(KEYS)
                cost = rng.choice([CENT // 2, CENT, 3 * CENT])
                request_id = f"s{seed}-{step}"
                budgets = ((Scope.KEY, key), (Scope.TEAM, "team-a"))
                r = reservation(request_id, cost, budgets, key_id=key, deadline_at=1e12)
                if await leases.reserve(r) is None:
                    in_flight[request_id] = (key, cost)
            elif action == "settle" and in_flight:
                request_id = rng.choice(sorted(in_flight))
                key, cost = in_flight.pop(request_id)
                actual = rng.choice([0, cost // 3, cost])
                await leases.settle(settlement(request_id, actual, key_id=key))
                finished[request_id] = (key, actual)
            elif action == "clock":
                clock.now += rng.choice([0.1, 0.3, 0.6, 2.5])
            elif action == "tick":
                await leases.tick()
            elif action == "flush":
                await leases.flush()
            elif action == "restart":
                await leases.aclose()  # what it had in flight is cut off, as by kill -9
                abandoned.update(in_flight)
                in_flight.clear()
                leases = instance()
                await leases.recover()
            await store.flush()
            await check_limits(store)
        for request_id, (key, cost) in list(in_flight.items()):
            await leases.settle(settlement(request_id, cost, key_id=key))
            finished[request_id] = (key, cost)
        await leases.aclose()
        await instance().recover()

        rows = await store.ledger_rows(since=0, limit=100_000)
        by_request: dict[str, list[str]] = {}
        for row in rows:
            by_request.setdefault(row.request_id, []).append(row.status)
        assert set(by_request) == set(finished) | set(abandoned)
        assert all(len(statuses) == 1 for statuses in by_request.values())
        assert all(by_request[r] == ["recovered"] for r in abandoned)
        assert all(by_request[r] == ["ok"] for r in finished)
        charged = {**finished, **abandoned}
        for key in KEYS:
            expected = sum(cost for k, cost in charged.values() if k == key)
            assert await spend_of(store, Scope.KEY, key) == (expected, 0)
        assert await spend_of(store, Scope.TEAM, "team-a") == (sum(c for _, c in charged.values()), 0)
    finally:
        await store.aclose()
