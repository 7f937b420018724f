"""The request log in PostgreSQL: what each :class:`~modelyard.store.postgres.PostgresStore`
request-log method runs (see :mod:`modelyard.store._requestlog_sql` for the SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from modelyard.store import _requestlog_sql as rl
from modelyard.store.requestlog import (
    LATENCY_COLUMNS,
    REQUEST_COLUMNS,
    ROLLUP_COLUMNS,
    RequestQuery,
    RequestRow,
    RollupQuery,
    Visibility,
    request_from_row,
    request_to_row,
    rollup_deltas,
)


def _placeholder(n: int) -> str:
    return f"${n}"


def _values(n: int) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1))


def migration(schema: str) -> tuple[str, tuple[str, ...]]:
    """Migration 0002 for tables in ``schema`` (already validated and quoted)."""
    return rl.MIGRATION_NAME, rl.migration(f"{schema}.", rl.POSTGRES_TYPES)


class PostgresRequestLog:
    """The request-log statements of one schema, run on connections of the store's pool."""

    def __init__(self, schema: str) -> None:
        self._t_requests = f"{schema}.requests"
        self._t_rollup = f"{schema}.request_rollup"
        self._t_latency = f"{schema}.request_latency"
        self._t_keys = f"{schema}.keys"
        self._insert_sql = rl.insert_requests_sql(self._t_requests, _values(len(REQUEST_COLUMNS)))
        self._rollup_sql = rl.upsert_rollup_sql(
            self._t_rollup, "request_rollup", _values(len(ROLLUP_COLUMNS))
        )
        self._latency_sql = rl.upsert_latency_sql(
            self._t_latency, "request_latency", _values(len(LATENCY_COLUMNS))
        )
        self._existing_sql = f"SELECT request_id FROM {self._t_requests} WHERE request_id = ANY($1::text[])"

    async def write(self, pool: asyncpg.Pool, rows: Sequence[RequestRow]) -> int:
        """Insert the rows not stored yet and add them to the rollups (one transaction)."""
        async with pool.acquire() as conn, conn.transaction():
            found = await conn.fetch(self._existing_sql, [r.request_id for r in rows])
            seen = {record[0] for record in found}
            new: list[RequestRow] = []
            for row in rows:
                if row.request_id not in seen:
                    seen.add(row.request_id)
                    new.append(row)
            if not new:
                return 0
            await conn.executemany(self._insert_sql, [request_to_row(r) for r in new])
            rollups, latencies = rollup_deltas(new)
            await conn.executemany(self._rollup_sql, [d.values() for d in rollups])
            await conn.executemany(self._latency_sql, [d.values() for d in latencies])
            return len(new)

    async def search(self, pool: asyncpg.Pool, query: RequestQuery) -> list[RequestRow]:
        sql, params = rl.search_sql(
            query,
            table=self._t_requests,
            table_keys=self._t_keys,
            placeholder=_placeholder,
            clause_like="ILIKE",
        )
        rows = await pool.fetch(sql, *params)
        return [request_from_row(tuple(row)) for row in rows]

    async def by_id(self, pool: asyncpg.Pool, request_id: str, visibility: Visibility) -> RequestRow | None:
        sql, params = rl.search_sql(
            RequestQuery(limit=1, visibility=visibility),
            table=self._t_requests,
            table_keys=self._t_keys,
            placeholder=_placeholder,
            clause_like="ILIKE",
            with_bodies=True,
            request_id=request_id,
        )
        row = await pool.fetchrow(sql, *params)
        return None if row is None else request_from_row(tuple(row))

    async def rollup(self, pool: asyncpg.Pool, query: RollupQuery) -> list[dict[str, Any]]:
        sql, params = rl.rollup_sql(
            query, table=self._t_rollup, table_keys=self._t_keys, placeholder=_placeholder
        )
        rows = await pool.fetch(sql, *params)
        return rl.rollup_result([tuple(row) for row in rows], query.group_by)

    async def latency(
        self, pool: asyncpg.Pool, since: float, until: float, res: int
    ) -> list[tuple[Any, ...]]:
        sql, params = rl.latency_sql(since, until, res, table=self._t_latency, placeholder=_placeholder)
        return [tuple(row) for row in await pool.fetch(sql, *params)]

    async def purge(self, pool: asyncpg.Pool, before: float) -> int:
        total = 0
        while True:
            sql, params = rl.purge_requests_sql(self._t_requests, _placeholder, before)
            status = await pool.execute(sql, *params)
            deleted = int(str(status).rsplit(" ", 1)[-1] or 0)
            total += deleted
            if deleted < rl.PURGE_CHUNK:
                break
        for table in (self._t_rollup, self._t_latency):
            sql, params = rl.purge_rollups_sql(table, _placeholder, before)
            await pool.execute(sql, *params)
        return total
