"""The money rules of a write batch, free of any database: both backends load rows, call
:func:`plan_batch`, and write back what it changed, inside one transaction.

Order inside a batch: settlements first (they can only free budget), then reservations in arrival
order, each decided against the state the previous ones left.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modelyard.store.base import (
    AttemptRow,
    BudgetSpec,
    BudgetState,
    Denied,
    Period,
    Reservation,
    Scope,
    Settlement,
)

RECOVERED_ATTEMPT = -1
"""The ``attempt`` of the row that recovery writes: never a real attempt number, so it cannot
collide with (and hide) a late real row of the same request."""

BudgetKey = tuple[str, str]
"""(scope, scope_id)."""


def period_start(period: Period | str, now: float) -> float:
    """When the period containing ``now`` began: UTC midnight, the 1st of the month UTC, or 0."""
    if period == Period.TOTAL:
        return 0.0
    t = time.gmtime(now)
    if period == Period.DAILY:
        return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)))
    if period == Period.MONTHLY:
        return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
    raise ValueError(f"unknown budget period {period!r}: use daily, monthly or total")


@dataclass(slots=True)
class BudgetRow:
    """A budgets row as loaded, changed in place; ``dirty`` rows are written back."""

    scope: str
    scope_id: str
    period: str
    limit_nano: int
    spend_nano: int
    reserved_nano: int
    period_start: float
    dirty: bool = False

    def roll(self, now: float) -> None:
        """Start the current period if the stored one has ended. Reservations carry over: their
        requests are still in flight, and their settlement is charged to the new period."""
        start = period_start(self.period, now)
        if start > self.period_start:
            self.spend_nano = 0
            self.period_start = start
            self.dirty = True

    def spec(self) -> BudgetSpec:
        return BudgetSpec(Scope(self.scope), self.scope_id, Period(self.period), self.limit_nano)

    def state(self) -> BudgetState:
        return BudgetState(self.spec(), self.spend_nano, self.reserved_nano, self.period_start)


@dataclass(slots=True)
class ReservationRow:
    """A reservations row as loaded (only what settlement needs, plus what recovery writes)."""

    request_id: str
    max_cost_nano: int
    budgets: tuple[BudgetKey, ...]
    status: str
    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    tags: tuple[str, ...] = ()
    model: str = ""
    created_at: float = 0.0
    deadline_at: float = 0.0


@dataclass(slots=True)
class BatchPlan:
    """What a batch changes. The backends write exactly this."""

    decisions: list[Denied | None] = field(default_factory=list)
    new_reservations: list[Reservation] = field(default_factory=list)
    settled_ids: list[str] = field(default_factory=list)
    ledger_rows: list[AttemptRow] = field(default_factory=list)
    dirty_budgets: list[BudgetRow] = field(default_factory=list)


def budget_keys(budgets: tuple[tuple[Scope, str], ...] | tuple[BudgetKey, ...]) -> tuple[BudgetKey, ...]:
    """Distinct (scope, id) pairs, as plain strings, in first-seen order."""
    return tuple(dict.fromkeys((str(scope), str(scope_id)) for scope, scope_id in budgets))


def recovery_settlement(row: ReservationRow, now: float) -> Settlement:
    """The settlement that recovery writes for a reservation left pending: its reserved amount."""
    attempt = AttemptRow(
        request_id=row.request_id,
        attempt=RECOVERED_ATTEMPT,
        key_id=row.key_id,
        team_id=row.team_id,
        user_id=row.user_id,
        org_id=row.org_id,
        tags=row.tags,
        model_requested=row.model,
        deployment="",
        route_reason="recovered",
        local=False,
        tokens_in=0,
        tokens_out=0,
        tokens_cache_read=0,
        tokens_cache_write=0,
        cost_nano=row.max_cost_nano,
        status="recovered",
        http_status=None,
        latency_ms=max(0.0, (now - row.created_at) * 1000.0),
        ttft_ms=None,
        created_at=row.created_at,
    )
    return Settlement(row.request_id, (attempt,))


def plan_batch(
    *,
    budgets: dict[BudgetKey, list[BudgetRow]],
    reservations: dict[str, ReservationRow],
    existing_attempts: set[tuple[str, int]],
    settlements: list[Settlement],
    reserves: list[Reservation],
    now: float,
) -> BatchPlan:
    """Decide a batch. ``budgets`` must hold every row of every (scope, id) named by the
    reservations being settled or made; ``reservations`` every already-stored reservation among
    them; ``existing_attempts`` the stored (request_id, attempt) of the pending ones settled."""
    plan = BatchPlan()
    dirty: dict[tuple[str, str, str], BudgetRow] = {}
    seen_rows = set(existing_attempts)

    def rows_of(keys: tuple[BudgetKey, ...]) -> list[BudgetRow]:
        found = [row for key in keys for row in budgets.get(key, ())]
        for row in found:
            row.roll(now)
        return found

    def touch(row: BudgetRow) -> None:
        row.dirty = True
        dirty[(row.scope, row.scope_id, row.period)] = row

    for settlement in settlements:
        inserted_cost = 0
        for attempt in settlement.rows:
            ident = (attempt.request_id, attempt.attempt)
            if ident in seen_rows:
                continue  # a replay: ON CONFLICT DO NOTHING would skip it too
            seen_rows.add(ident)
            plan.ledger_rows.append(attempt)
            inserted_cost += attempt.cost_nano
        pending = reservations.get(settlement.request_id)
        if pending is None or pending.status != "pending":
            continue  # unknown or already settled: the rows only
        pending.status = "settled"
        plan.settled_ids.append(pending.request_id)
        for row in rows_of(pending.budgets):
            row.spend_nano += inserted_cost
            row.reserved_nano = max(0, row.reserved_nano - pending.max_cost_nano)
            touch(row)

    for reservation in reserves:
        if reservation.request_id in reservations:
            plan.decisions.append(None)  # reserved already (a retried call): never twice
            continue
        keys = budget_keys(reservation.budgets)
        rows = rows_of(keys)
        cost = reservation.max_cost_nano
        denied = next(
            (
                Denied(row.spec(), row.spend_nano, row.reserved_nano)
                for row in rows
                if cost > 0 and row.spend_nano + row.reserved_nano + cost > row.limit_nano
            ),
            None,
        )
        plan.decisions.append(denied)
        if denied is not None:
            continue
        for row in rows:
            if cost:
                row.reserved_nano += cost
                touch(row)
        reservations[reservation.request_id] = ReservationRow(reservation.request_id, cost, keys, "pending")
        plan.new_reservations.append(reservation)

    # Rolled rows are written too, so the stored period start moves on.
    for key_rows in budgets.values():
        for row in key_rows:
            if row.dirty:
                dirty[(row.scope, row.scope_id, row.period)] = row
    plan.dirty_budgets = [dirty[k] for k in sorted(dirty)]
    return plan


def budget_states(rows: Iterable[Any], now: float) -> list[BudgetState]:
    """Budget rows as of ``now``, periods rolled without writing (the next write rolls them for real)."""
    states = []
    for row in rows:
        budget = BudgetRow(*row)
        budget.roll(now)
        states.append(budget.state())
    return states
