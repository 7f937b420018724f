"""Store fixtures: every backend test runs on SQLite, and on PostgreSQL when a server is given."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store._support import PG_ENV, PG_HOWTO, Backend, run_sync

_reachable: dict[str, str | None] = {}


def _postgres_problem(dsn: str) -> str | None:
    """Why the server cannot be used (None: it can); asked once per run."""
    if dsn not in _reachable:
        import asyncpg

        async def probe() -> None:
            conn = await asyncpg.connect(dsn, timeout=5)
            await conn.close()

        try:
            run_sync(probe)
            _reachable[dsn] = None
        except Exception as exc:
            _reachable[dsn] = f"{type(exc).__name__}: {exc}"
    return _reachable[dsn]


def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    run_sync(drop)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "modelyard.db"))
        return
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(PG_HOWTO)
    problem = _postgres_problem(dsn)
    if problem is not None:
        pytest.skip(f"PostgreSQL at {PG_ENV} is not reachable ({problem}). {PG_HOWTO}")
    schema = f"modelyard_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    try:
        yield Backend("postgres", dsn, schema)
    finally:
        _drop_schema(dsn, schema)
