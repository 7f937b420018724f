"""Builders and backend handles shared by the store tests and their child processes.

A :class:`Backend` is picklable, so a ``multiprocessing`` child (spawn) can open its own store on
the same SQLite file or PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from modelyard.store.base import (
    NANO_PER_USD,
    AttemptRow,
    BudgetSpec,
    Period,
    Reservation,
    Scope,
    Settlement,
    Store,
)

T = TypeVar("T")

PG_ENV = "MODELYARD_TEST_POSTGRES_DSN"
PG_HOWTO = (
    f"PostgreSQL store tests need a server: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/test "
    "(trust auth; each run uses its own schema and drops it)"
)
STRESS = os.environ.get("MODELYARD_STRESS") == "1"

USD = NANO_PER_USD
CENT = USD // 100


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives: ``kind`` sqlite (``target`` = file) or postgres (``target`` = dsn)."""

    kind: str
    target: str
    schema: str = "public"

    def store(self, **options: Any) -> Store:
        if self.kind == "sqlite":
            from modelyard.store.sqlite import SqliteStore

            return SqliteStore(self.target, **options)
        from modelyard.store.postgres import PostgresStore

        options.setdefault("pool_size", 4)
        return PostgresStore(self.target, schema=self.schema, **options)

    async def open(self, **options: Any) -> Store:
        store = self.store(**options)
        await store.open()
        return store


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh loop in another thread (usable from sync code and
    from inside a running loop alike)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(fn()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def reservation(
    request_id: str,
    max_cost: int,
    budgets: tuple[tuple[Scope, str], ...],
    *,
    key_id: str | None = "k1",
    created_at: float = 1_000.0,
    deadline_at: float = 1_300.0,
    tags: tuple[str, ...] = (),
    model: str = "gpt-test",
) -> Reservation:
    return Reservation(
        request_id=request_id,
        max_cost_nano=max_cost,
        budgets=budgets,
        key_id=key_id,
        team_id="team-a",
        user_id="user-a",
        org_id="org-a",
        tags=tags,
        model=model,
        created_at=created_at,
        deadline_at=deadline_at,
    )


def attempt(
    request_id: str,
    cost: int,
    *,
    attempt_no: int = 1,
    key_id: str | None = "k1",
    team_id: str | None = "team-a",
    user_id: str | None = "user-a",
    org_id: str | None = "org-a",
    tags: tuple[str, ...] = (),
    model: str = "gpt-test",
    deployment: str = "openai/gpt-test",
    local: bool = False,
    status: str = "ok",
    tokens_in: int = 10,
    tokens_out: int = 20,
    created_at: float = 1_000.0,
) -> AttemptRow:
    return AttemptRow(
        request_id=request_id,
        attempt=attempt_no,
        key_id=key_id,
        team_id=team_id,
        user_id=user_id,
        org_id=org_id,
        tags=tags,
        model_requested=model,
        deployment=deployment,
        route_reason="primary",
        local=local,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens_cache_read=0,
        tokens_cache_write=0,
        cost_nano=cost,
        status=status,
        http_status=200 if status == "ok" else 502,
        latency_ms=12.5,
        ttft_ms=3.0,
        created_at=created_at,
    )


def settlement(request_id: str, cost: int, **row: Any) -> Settlement:
    return Settlement(request_id, (attempt(request_id, cost, **row),))


async def spend_of(
    store: Store, scope: Scope, scope_id: str, period: Period = Period.TOTAL
) -> tuple[int, int]:
    """(spend, reserved) of one budget."""
    for state in await store.budgets(scope, scope_id):
        if state.spec.period == period:
            return state.spend_nano, state.reserved_nano
    raise AssertionError(f"no {period} budget for {scope}:{scope_id}")


async def make_budget(
    store: Store, scope: Scope, scope_id: str, limit: int, period: Period = Period.TOTAL
) -> None:
    await store.set_budget(BudgetSpec(scope, scope_id, period, limit))


def throwaway_postgres_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named ``<prefix>_<random>`` (a generator: yields its DSN, then
    drops it), for gateways that keep their tables in ``public``. Skips the calling test, saying how
    to run it, when no server is configured or it cannot be used."""
    import pytest

    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(PG_HOWTO)
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        run_sync(lambda: admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_ENV} cannot be used ({type(exc).__name__}: {exc}). {PG_HOWTO}")
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
