"""C8 (a Hypothesis model of the ledger) and C9 (money arithmetic exact at scale).

C8 runs modest in CI: 200 examples × 30 steps on SQLite, 100 × 30 on PostgreSQL (each step is a
few round trips). The full run of RELIABILITY C8 (2,000 examples × 50 steps, both backends)::

    MODELYARD_STRESS=1 MODELYARD_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest tests/store/test_model.py -k c8
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import random
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from modelyard.store._ledger import BudgetRow, ReservationRow, period_start, plan_batch
from modelyard.store.base import AttemptRow, BudgetSpec, Denied, Period, Scope, Settlement, Store
from tests.store._support import STRESS, Backend, attempt, reservation, spend_of, unique

T = TypeVar("T")

C8_SETTINGS = settings(
    max_examples=2_000 if STRESS else 200,
    stateful_step_count=50 if STRESS else 30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DAILY_LIMIT = 1_000
TOTAL_LIMIT = 4_000
MAX_COST = 300
DEADLINE_S = 60.0
START = float(calendar.timegm((2025, 1, 31, 23, 45, 0)))  # near midnight and a month's end


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class LedgerMachine(RuleBasedStateMachine):
    """The store against a dict model: every decision and every counter must match exactly."""

    backend: Backend
    loop: asyncio.AbstractEventLoop
    db_dir: Path
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(START)
        self.key = unique("c8")
        if self.backend.kind == "sqlite":  # a fresh file per example
            self.backend = Backend("sqlite", str(self.db_dir / f"c8-{next(self.counter)}.db"))
        self.budgets = ((Scope.KEY, self.key), (Scope.TEAM, self.key))
        self.store = self.open()
        self.run(self.store.set_budget(BudgetSpec(Scope.KEY, self.key, Period.DAILY, DAILY_LIMIT)))
        self.run(self.store.set_budget(BudgetSpec(Scope.TEAM, self.key, Period.TOTAL, TOTAL_LIMIT)))
        self.daily_start = period_start(Period.DAILY, START)
        self.daily_spend = self.total_spend = self.reserved = 0
        self.pending: dict[str, tuple[int, float]] = {}
        self.settled: list[Settlement] = []
        self.ids = itertools.count()

    def open(self) -> Store:
        options: dict[str, Any] = {"clock": self.clock}
        if self.backend.kind == "postgres":  # the model checks logic, not fsync
            options["server_settings"] = {"synchronous_commit": "off"}
        return self.run(self.backend.open(**options))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.aclose())

    def roll(self) -> None:
        start = period_start(Period.DAILY, self.clock.now)
        if start > self.daily_start:
            self.daily_start, self.daily_spend = start, 0

    def charge(self, request_id: str, cost: int) -> None:
        max_cost, _ = self.pending.pop(request_id)
        self.roll()
        self.daily_spend += cost
        self.total_spend += cost
        self.reserved -= max_cost

    @rule(cost=st.integers(0, MAX_COST), seconds=st.integers(0, 30))
    def admit(self, cost: int, seconds: int) -> None:
        self.clock.now += seconds
        self.roll()
        request_id = f"{self.key}-{next(self.ids)}"
        fits = self.daily_spend + self.reserved + cost <= DAILY_LIMIT
        fits = fits and self.total_spend + self.reserved + cost <= TOTAL_LIMIT
        r = reservation(
            request_id, cost, self.budgets, key_id=self.key, created_at=self.clock.now,
            deadline_at=self.clock.now + DEADLINE_S,
        )  # fmt: skip
        result = self.run(self.store.reserve(r))
        assert (result is None) == (fits or cost == 0), (result, cost, self.daily_spend, self.reserved)
        if result is None:
            self.pending[request_id] = (cost, self.clock.now + DEADLINE_S)
            self.reserved += cost

    def _settle(self, request_id: str, rows: tuple[AttemptRow, ...]) -> None:
        settlement = Settlement(request_id, rows)
        self.run(self.store.settle(settlement))
        self.charge(request_id, settlement.cost_nano)
        self.settled.append(settlement)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), status=st.sampled_from(["ok", "upstream_cut", "client_disconnect", "timeout"]))
    def complete(self, data: st.DataObject, status: str) -> None:
        """Settle at an actual cost ≤ the reservation, maybe after a failed (charged) attempt."""
        request_id = data.draw(st.sampled_from(sorted(self.pending)))
        max_cost = self.pending[request_id][0]
        actual = data.draw(st.integers(0, max_cost))
        first = data.draw(st.integers(0, actual))
        rows = (attempt(request_id, actual, key_id=self.key, status=status, created_at=self.clock.now),)
        if first:
            rows = (
                attempt(request_id, first, key_id=self.key, status="error", created_at=self.clock.now),
                attempt(request_id, actual - first, attempt_no=2, key_id=self.key, created_at=self.clock.now),
            )
        self._settle(request_id, rows)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        """Rejected upstream before any token: settled with 0, the reservation released."""
        request_id = data.draw(st.sampled_from(sorted(self.pending)))
        self._settle(request_id, (attempt(request_id, 0, key_id=self.key, status="error"),))

    @precondition(lambda self: self.settled)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A settlement written again (a retried commit): nothing changes."""
        self.run(self.store.settle(data.draw(st.sampled_from(self.settled))))

    @rule()
    def reset_period(self) -> None:
        """Jump to just after the next UTC midnight: the daily budget starts over."""
        self.clock.now = period_start(Period.DAILY, self.clock.now) + 86_400 + 5
        self.roll()

    @rule()
    def restart(self) -> None:
        self.run(self.store.aclose())
        self.store = self.open()

    @rule(seconds=st.integers(0, 90))
    def recover(self, seconds: int) -> None:
        """Time passes; reservations past their deadline are settled at their reserved amount."""
        self.clock.now += seconds
        overdue = [rid for rid, (_, deadline) in self.pending.items() if deadline < self.clock.now]
        recovered = self.run(self.store.recover_pending(self.clock.now))
        if self.backend.kind == "sqlite":
            assert recovered == len(overdue)
        else:  # the schema is shared by all examples: earlier examples' reservations count too
            assert recovered >= len(overdue)
        for request_id in overdue:
            self.charge(request_id, self.pending[request_id][0])

    @invariant()
    def counters_match(self) -> None:
        self.run(self.store.flush())
        self.roll()
        states = {b.spec.scope: b for b in self.run(self.store.budgets(scope_id=self.key))}
        daily = (states[Scope.KEY].spend_nano, states[Scope.KEY].reserved_nano)
        total = (states[Scope.TEAM].spend_nano, states[Scope.TEAM].reserved_nano)
        assert daily == (self.daily_spend, self.reserved)
        assert total == (self.total_spend, self.reserved)
        assert daily[0] + daily[1] <= DAILY_LIMIT + MAX_COST
        assert total[0] + total[1] <= TOTAL_LIMIT + MAX_COST
        report = self.run(self.store.spend_report(group_by="key", since=0, filters={"key": self.key}))
        assert sum(row["cost_nano"] for row in report) == total[0]


def test_c8_ledger_model(backend: Backend, tmp_path: Path) -> None:
    # The model checks logic, not fsync: SQLite files go to tmpfs where there is one.
    shm = Path("/dev/shm")
    db_dir = Path(tempfile.mkdtemp(prefix="modelyard-c8-", dir=shm)) if shm.is_dir() else tmp_path
    loop = asyncio.new_event_loop()
    try:
        machine = type("Machine", (LedgerMachine,), {"backend": backend, "loop": loop, "db_dir": db_dir})
        examples = C8_SETTINGS.max_examples if STRESS or backend.kind == "sqlite" else 100
        run_state_machine_as_test(machine, settings=settings(C8_SETTINGS, max_examples=examples))
    finally:
        loop.close()
        if db_dir != tmp_path:
            shutil.rmtree(db_dir, ignore_errors=True)


def test_c9_million_costs_exact_in_batch_math() -> None:
    """C9: 10**6 random integer costs through the settlement arithmetic: the sum is exact (a float
    running sum of the same costs is not)."""
    rng = random.Random(9)
    costs = [rng.randrange(10**12) for _ in range(10**6)]
    template = attempt("r", 0)
    fields = [getattr(template, name) for name in template.__slots__]
    settlements = []
    for r in range(1_000):  # 1,000 requests of 1,000 attempts
        rows = []
        for a in range(1_000):
            fields[0], fields[1], fields[15] = f"r{r}", a, costs[r * 1_000 + a]
            rows.append(AttemptRow(*fields))
        settlements.append(Settlement(f"r{r}", tuple(rows)))
    budget = BudgetRow("key", "k", "total", 2**62, 0, 1_000 * 10**15, 0.0)
    reservations = {
        f"r{r}": ReservationRow(f"r{r}", 10**15, (("key", "k"),), "pending") for r in range(1_000)
    }
    plan = plan_batch(
        budgets={("key", "k"): [budget]},
        reservations=reservations,
        existing_attempts=set(),
        settlements=settlements,
        reserves=[],
        now=0.0,
    )
    assert budget.spend_nano == sum(costs) and budget.reserved_nano == 0
    assert len(plan.ledger_rows) == 10**6
    floating = 0.0
    for cost in costs:
        floating += cost / 1e9
    assert round(floating * 1e9) != sum(costs)  # what integer nano-dollars avoid


async def test_c9_costs_exact_in_the_database(backend: Backend) -> None:
    """C9 in the database: 10**5 random costs (10**6 with MODELYARD_STRESS=1) up to $1,000 each
    — past float64's exact range — settled, summed by spend and by the report, exactly."""
    count = 10**6 if STRESS else 10**5
    rng = random.Random(99)
    store: Store = await backend.open()
    try:
        await store.set_budget(BudgetSpec(Scope.KEY, "c9", Period.TOTAL, 2**62))
        costs = [rng.randrange(10**12) for _ in range(count)]
        per_request = 100
        chunks = [costs[start : start + per_request] for start in range(0, count, per_request)]
        decisions = await asyncio.gather(
            *(
                store.reserve(reservation(f"c9-{n}", sum(chunk), ((Scope.KEY, "c9"),)))
                for n, chunk in enumerate(chunks)
            )
        )
        assert decisions == [None] * len(chunks)
        for n, chunk in enumerate(chunks):
            rows = tuple(attempt(f"c9-{n}", c, attempt_no=i, key_id="c9") for i, c in enumerate(chunk))
            await store.settle(Settlement(f"c9-{n}", rows))
        await store.flush()
        assert await spend_of(store, Scope.KEY, "c9") == (sum(costs), 0)
        [row] = await store.spend_report(group_by="key", since=0)
        assert row["cost_nano"] == sum(costs) and isinstance(row["cost_nano"], int)
    finally:
        await store.aclose()


def test_denied_carries_the_exceeded_budget() -> None:
    budget = BudgetRow("key", "k", "daily", 10, 4, 5, 0.0)
    plan = plan_batch(
        budgets={("key", "k"): [budget]},
        reservations={},
        existing_attempts=set(),
        settlements=[],
        reserves=[reservation("a", 1, ((Scope.KEY, "k"),)), reservation("b", 1, ((Scope.KEY, "k"),))],
        now=0.0,
    )
    assert plan.decisions == [None, Denied(BudgetSpec(Scope.KEY, "k", Period.DAILY, 10), 4, 6)]
