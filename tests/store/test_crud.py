"""Keys, budgets, reservations, settlement, recovery and reports: behaviour on every backend."""

from __future__ import annotations

import calendar
import hashlib

import pytest

from modelyard.store._ledger import RECOVERED_ATTEMPT, period_start
from modelyard.store.base import BudgetSpec, Denied, KeyRecord, Period, Role, Scope, Settlement
from tests.store._support import (
    CENT,
    USD,
    Backend,
    attempt,
    make_budget,
    reservation,
    settlement,
    spend_of,
)

KEY = ((Scope.KEY, "k1"),)
KEY_TEAM = ((Scope.KEY, "k1"), (Scope.TEAM, "team-a"))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(year: int, month: int, day: int, hour: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, 0, 0)))


def key_record(key_id: str, **fields: object) -> KeyRecord:
    secret = f"sk-my-{key_id}"
    values: dict[str, object] = {
        "id": key_id,
        "hash": hashlib.sha256(secret.encode()).hexdigest(),
        "hint": f"sk-my-…{secret[-4:]}",
        "role": Role.KEY_HOLDER,
        "created_at": 100.0,
    }
    values.update(fields)
    return KeyRecord(**values)  # type: ignore[arg-type]


def test_period_start_utc_boundaries() -> None:
    now = utc(2025, 3, 17, 23) + 3599.5
    assert period_start(Period.DAILY, now) == utc(2025, 3, 17)
    assert period_start(Period.MONTHLY, now) == utc(2025, 3, 1)
    assert period_start(Period.TOTAL, now) == 0.0
    assert period_start(Period.DAILY, utc(2025, 3, 18)) == utc(2025, 3, 18)
    assert period_start(Period.MONTHLY, utc(2024, 12, 31, 23)) == utc(2024, 12, 1)


async def test_keys_insert_lookup_list_revoke(backend: Backend) -> None:
    store = await backend.open()
    try:
        full = key_record(
            "k1",
            name="ci",
            org_id="o1",
            team_id="t1",
            user_id="u1",
            tags=("prod", "eu"),
            models=("gpt-4o", "local"),
            max_tokens=512,
            rpm=60,
            tpm=10_000,
            expires_at=9e9,
            created_by="admin-key",
            store_prompts=True,
            metadata={"owner": "ops", "n": [1, 2]},
            role=Role.ADMIN,
        )
        await store.insert_key(full)
        await store.insert_key(key_record("k2", team_id="t2"))
        await store.insert_key(key_record("k3", team_id="t1"))
        assert await store.key_by_hash(full.hash) == full
        assert await store.key_by_id("k2") == key_record("k2", team_id="t2")
        assert await store.key_by_id("nope") is None
        assert await store.key_by_hash("0" * 64) is None
        assert [k.id for k in await store.list_keys()] == ["k1", "k2", "k3"]
        assert [k.id for k in await store.list_keys(team_id="t1")] == ["k1", "k3"]
        assert [k.id for k in await store.list_keys(org_id="o1", user_id="u1")] == ["k1"]

        assert await store.revoke_key("k3", at=50.0)
        assert await store.revoke_key("k2", at=9e12)  # a rotation's overlap: still active for now
        assert not await store.revoke_key("missing", at=50.0)
        assert [k.id for k in await store.list_keys()] == ["k1", "k2"]
        revoked = await store.key_by_id("k3")
        assert revoked is not None and revoked.revoked_at == 50.0 and not revoked.active(60.0)
        assert [k.id for k in await store.list_keys(include_revoked=True)] == ["k1", "k2", "k3"]
    finally:
        await store.aclose()


async def test_budget_set_keeps_spend_and_delete(backend: Backend) -> None:
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "k1", USD)
        assert await store.reserve(reservation("r1", 30 * CENT, KEY)) is None
        await store.settle(settlement("r1", 20 * CENT))
        await store.flush()
        await make_budget(store, Scope.KEY, "k1", 2 * USD)  # change the limit: spend stays
        [state] = await store.budgets(Scope.KEY, "k1")
        assert (state.spec.limit_nano, state.spend_nano, state.reserved_nano) == (2 * USD, 20 * CENT, 0)
        await make_budget(store, Scope.TEAM, "team-a", USD, Period.MONTHLY)
        assert len(await store.budgets()) == 2
        assert [b.spec.scope for b in await store.budgets(Scope.TEAM)] == [Scope.TEAM]
        assert await store.delete_budget(Scope.TEAM, "team-a", Period.MONTHLY)
        assert not await store.delete_budget(Scope.TEAM, "team-a", Period.MONTHLY)
        assert len(await store.budgets()) == 1
    finally:
        await store.aclose()


async def test_reserve_is_all_or_nothing_across_budgets(backend: Backend) -> None:
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "k1", USD)
        await make_budget(store, Scope.TEAM, "team-a", 50 * CENT, Period.DAILY)
        assert await store.reserve(reservation("r1", 40 * CENT, KEY_TEAM)) is None
        denied = await store.reserve(reservation("r2", 20 * CENT, KEY_TEAM))
        assert isinstance(denied, Denied)
        assert denied.spec == BudgetSpec(Scope.TEAM, "team-a", Period.DAILY, 50 * CENT)
        assert (denied.spend_nano, denied.reserved_nano) == (0, 40 * CENT)
        # Nothing was reserved on the key budget for the denied request.
        assert await spend_of(store, Scope.KEY, "k1") == (0, 40 * CENT)
        # No budget row for a scope: unlimited.
        assert await store.reserve(reservation("r3", 500 * USD, ((Scope.USER, "nobody"),))) is None
        # The same request reserved twice (a retried call) is reserved once.
        assert await store.reserve(reservation("r1", 40 * CENT, KEY_TEAM)) is None
        assert await spend_of(store, Scope.KEY, "k1") == (0, 40 * CENT)
    finally:
        await store.aclose()


async def test_zero_cost_admitted_on_spent_budget(backend: Backend) -> None:
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "k1", 10 * CENT)
        assert await store.reserve(reservation("r1", 10 * CENT, KEY)) is None
        await store.settle(settlement("r1", 10 * CENT))
        assert isinstance(await store.reserve(reservation("r2", 1, KEY)), Denied)
        assert await store.reserve(reservation("free", 0, KEY)) is None
        await store.flush()
        # The pending row was written: recovery settles it (at 0).
        assert await store.recover_pending(now=10_000.0) == 1
        assert await spend_of(store, Scope.KEY, "k1") == (10 * CENT, 0)
    finally:
        await store.aclose()


async def test_settle_is_idempotent_and_unknown_writes_rows_only(backend: Backend) -> None:
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "k1", USD)
        assert await store.reserve(reservation("r1", 30 * CENT, KEY)) is None
        first = Settlement(
            "r1", (attempt("r1", 5 * CENT, status="error"), attempt("r1", 7 * CENT, attempt_no=2))
        )
        await store.settle(first)
        await store.settle(first)  # replayed in the same batch
        await store.flush()
        await store.settle(first)  # and again later
        await store.settle(settlement("ghost", 3 * CENT))  # no reservation: rows only
        await store.flush()
        assert await spend_of(store, Scope.KEY, "k1") == (12 * CENT, 0)
        rows = await store.ledger_rows(request_id="r1")
        assert [(r.attempt, r.cost_nano, r.status) for r in rows] == [
            (1, 5 * CENT, "error"),
            (2, 7 * CENT, "ok"),
        ]
        assert len(await store.ledger_rows(request_id="ghost")) == 1
    finally:
        await store.aclose()


async def test_reserved_never_below_zero(backend: Backend) -> None:
    store = await backend.open()
    try:
        # The team budget appears after the reservation: settling must not drive it negative.
        assert await store.reserve(reservation("r1", 30 * CENT, KEY_TEAM)) is None
        await make_budget(store, Scope.TEAM, "team-a", USD)
        await store.settle(settlement("r1", 10 * CENT))
        await store.flush()
        assert await spend_of(store, Scope.TEAM, "team-a") == (10 * CENT, 0)
    finally:
        await store.aclose()


async def test_periods_roll_over(backend: Backend) -> None:
    clock = Clock(utc(2025, 1, 31, 22))
    store = await backend.open(clock=clock)
    try:
        for period in Period:
            await make_budget(store, Scope.KEY, "k1", USD, period)
        assert await store.reserve(reservation("r1", 40 * CENT, KEY)) is None
        await store.settle(settlement("r1", 30 * CENT))
        assert await store.reserve(reservation("r2", 50 * CENT, KEY)) is None  # in flight at midnight
        await store.flush()
        clock.now = utc(2025, 2, 1, 1)  # a new day and a new month
        for period in (Period.DAILY, Period.MONTHLY):
            assert await spend_of(store, Scope.KEY, "k1", period) == (0, 50 * CENT)
        assert await spend_of(store, Scope.KEY, "k1", Period.TOTAL) == (30 * CENT, 50 * CENT)
        # The request in flight at the rollover is charged to the new period.
        await store.settle(settlement("r2", 45 * CENT))
        await store.flush()
        assert await spend_of(store, Scope.KEY, "k1", Period.DAILY) == (45 * CENT, 0)
        assert await spend_of(store, Scope.KEY, "k1", Period.TOTAL) == (75 * CENT, 0)
        [daily] = [b for b in await store.budgets() if b.spec.period == Period.DAILY]
        assert daily.period_start == utc(2025, 2, 1)
        clock.now = utc(2025, 2, 2, 5)  # the next day: daily rolls, monthly does not
        assert await store.reserve(reservation("r3", 10 * CENT, KEY)) is None
        assert await spend_of(store, Scope.KEY, "k1", Period.DAILY) == (0, 10 * CENT)
        assert await spend_of(store, Scope.KEY, "k1", Period.MONTHLY) == (45 * CENT, 10 * CENT)
    finally:
        await store.aclose()


async def test_recover_pending_settles_overdue_at_reserved(backend: Backend) -> None:
    store = await backend.open()
    try:
        await make_budget(store, Scope.KEY, "k1", USD)
        assert await store.reserve(reservation("old", 20 * CENT, KEY, deadline_at=500.0)) is None
        assert await store.reserve(reservation("new", 30 * CENT, KEY, deadline_at=5_000.0)) is None
        assert await store.recover_pending(now=1_000.0) == 1
        assert await store.recover_pending(now=1_000.0) == 0
        assert await spend_of(store, Scope.KEY, "k1") == (20 * CENT, 30 * CENT)
        [row] = await store.ledger_rows(request_id="old")
        assert (row.status, row.cost_nano, row.attempt, row.key_id) == (
            "recovered",
            20 * CENT,
            RECOVERED_ATTEMPT,
            "k1",
        )
        await store.settle(settlement("old", 5 * CENT))  # late: rows only, never charged twice
        await store.flush()
        assert await spend_of(store, Scope.KEY, "k1") == (20 * CENT, 30 * CENT)
    finally:
        await store.aclose()


async def test_spend_report_groups_and_filters(backend: Backend) -> None:
    store = await backend.open()
    try:
        rows = [
            attempt("a", 100, tags=("prod", "eu"), key_id="k1", local=True),
            attempt("a", 50, attempt_no=2, tags=("prod", "eu"), key_id="k1", status="error", local=True),
            attempt("b", 200, tags=("prod",), key_id="k2", model="claude", deployment="anthropic/claude"),
            attempt("c", 400, key_id="k2", team_id="team-b", created_at=2_000.0),
        ]
        for request_id in "abc":
            await store.settle(Settlement(request_id, tuple(r for r in rows if r.request_id == request_id)))
        await store.flush()
        by_key = await store.spend_report(group_by="key", since=0)
        assert by_key == [
            {
                "group": "k2",
                "requests": 2,
                "tokens_in": 20,
                "tokens_out": 40,
                "cost_nano": 600,
                "local_requests": 0,
                "local_tokens": 0,
                "local_cost_nano": 0,
            },
            {
                "group": "k1",
                "requests": 1,
                "tokens_in": 20,
                "tokens_out": 40,
                "cost_nano": 150,
                "local_requests": 1,
                "local_tokens": 60,
                "local_cost_nano": 150,
            },
        ]
        by_tag = {
            r["group"]: (r["requests"], r["cost_nano"])
            for r in await store.spend_report(group_by="tag", since=0)
        }
        assert by_tag == {"prod": (2, 350), "eu": (1, 150)}
        by_status = {r["group"]: r["cost_nano"] for r in await store.spend_report(group_by="status", since=0)}
        assert by_status == {"ok": 700, "error": 50}
        by_model = await store.spend_report(group_by="model", since=0, until=1_500.0)
        assert {r["group"]: r["cost_nano"] for r in by_model} == {"gpt-test": 150, "claude": 200}
        assert [r["group"] for r in await store.spend_report(group_by="team", since=1_500.0)] == ["team-b"]
        filtered = await store.spend_report(
            group_by="deployment", since=0, filters={"tag": "eu", "key": "k1"}
        )
        assert [(r["group"], r["cost_nano"]) for r in filtered] == [("openai/gpt-test", 150)]
        for group in ("user", "org"):
            assert sum(r["cost_nano"] for r in await store.spend_report(group_by=group, since=0)) == 750
        with pytest.raises(ValueError, match="cannot group spend by 'colour'"):
            await store.spend_report(group_by="colour", since=0)
        with pytest.raises(ValueError, match="cannot filter spend by 'colour'"):
            await store.spend_report(group_by="key", since=0, filters={"colour": "x"})
        assert [r.request_id for r in await store.ledger_rows(limit=2)] == ["b", "c"]
        assert [(r.request_id, r.attempt) for r in await store.ledger_rows(since=0, limit=2)] == [
            ("a", 1),
            ("a", 2),
        ]
    finally:
        await store.aclose()


async def test_migrations_idempotent_and_restart_keeps_everything(backend: Backend) -> None:
    """C6: close and reopen (a restart mid-window): spend, reservations and keys identical."""
    store = await backend.open()
    await store.insert_key(key_record("k1"))
    await make_budget(store, Scope.KEY, "k1", USD, Period.DAILY)
    await make_budget(store, Scope.TEAM, "team-a", 10 * USD, Period.MONTHLY)
    for i in range(20):
        assert await store.reserve(reservation(f"r{i}", 3 * CENT, KEY_TEAM, created_at=1e12)) is None
    for i in range(12):
        await store.settle(settlement(f"r{i}", i * CENT // 7 + 1))
    await store.flush()
    before = await store.budgets()
    await store.aclose()
    for _ in range(2):  # the migrations run again on every open and change nothing
        reopened = await backend.open()
        try:
            assert await reopened.budgets() == before
            assert await reopened.key_by_id("k1") == key_record("k1")
            assert len(await reopened.ledger_rows(limit=1_000)) == 12
        finally:
            await reopened.aclose()
    assert before[0].spend_nano == sum(i * CENT // 7 + 1 for i in range(12))
    assert before[0].reserved_nano == 8 * 3 * CENT
