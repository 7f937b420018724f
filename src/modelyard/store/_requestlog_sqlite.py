"""The request log in SQLite: the work each :class:`~modelyard.store.sqlite.SqliteStore` method
runs on its writer or reader thread (see :mod:`modelyard.store._requestlog_sql` for the SQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from modelyard.store import _requestlog_sql as rl
from modelyard.store._sql import dumps
from modelyard.store._sqlite_bulk import bulk_sql, run_bulk
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

MIGRATION = (rl.MIGRATION_NAME, rl.migration("", rl.SQLITE_TYPES))

_INSERT_SQL = rl.insert_requests_sql("requests", ", ".join("?" * len(REQUEST_COLUMNS)))
_ROLLUP_SQL = rl.upsert_rollup_sql("request_rollup", "request_rollup", ", ".join("?" * len(ROLLUP_COLUMNS)))
_LATENCY_SQL = rl.upsert_latency_sql(
    "request_latency", "request_latency", ", ".join("?" * len(LATENCY_COLUMNS))
)
_INSERT_BULK = bulk_sql(_INSERT_SQL, len(REQUEST_COLUMNS))
_ROLLUP_BULK = bulk_sql(_ROLLUP_SQL, len(ROLLUP_COLUMNS))
_LATENCY_BULK = bulk_sql(_LATENCY_SQL, len(LATENCY_COLUMNS))
_EXISTING_SQL = "SELECT request_id FROM requests WHERE request_id IN (SELECT value FROM json_each(?))"


def _placeholder(_: int) -> str:
    return "?"


def write(rows: Sequence[RequestRow], conn: sqlite3.Connection) -> int:
    """Insert the rows not stored yet and add them to the rollups; returns how many were new."""
    seen = {rid for (rid,) in conn.execute(_EXISTING_SQL, (dumps([r.request_id for r in rows]),))}
    new: list[RequestRow] = []
    for row in rows:
        if row.request_id not in seen:
            seen.add(row.request_id)
            new.append(row)
    if not new:
        return 0
    # One statement each however many rows (see _sqlite_bulk: executemany waits for the GIL per row).
    run_bulk(conn, _INSERT_BULK, [request_to_row(r) for r in new])
    rollups, latencies = rollup_deltas(new)
    run_bulk(conn, _ROLLUP_BULK, [d.values() for d in rollups])
    run_bulk(conn, _LATENCY_BULK, [d.values() for d in latencies])
    return len(new)


def search(query: RequestQuery, conn: sqlite3.Connection) -> list[RequestRow]:
    sql, params = rl.search_sql(
        query, table="requests", table_keys="keys", placeholder=_placeholder, clause_like="LIKE"
    )
    return [request_from_row(row) for row in conn.execute(sql, params)]


def by_id(request_id: str, visibility: Visibility, conn: sqlite3.Connection) -> RequestRow | None:
    sql, params = rl.search_sql(
        RequestQuery(limit=1, visibility=visibility),
        table="requests",
        table_keys="keys",
        placeholder=_placeholder,
        clause_like="LIKE",
        with_bodies=True,
        request_id=request_id,
    )
    row = conn.execute(sql, params).fetchone()
    return None if row is None else request_from_row(row)


def rollup(query: RollupQuery, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    sql, params = rl.rollup_sql(query, table="request_rollup", table_keys="keys", placeholder=_placeholder)
    return rl.rollup_result(conn.execute(sql, params).fetchall(), query.group_by)


def latency(since: float, until: float, res: int, conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    sql, params = rl.latency_sql(since, until, res, table="request_latency", placeholder=_placeholder)
    return [tuple(row) for row in conn.execute(sql, params)]


def purge_chunk(before: float, conn: sqlite3.Connection) -> int:
    """Delete one chunk of old requests (and, once they are gone, old rollups)."""
    sql, params = rl.purge_requests_sql("requests", _placeholder, before)
    deleted = conn.execute(sql, params).rowcount
    if deleted < rl.PURGE_CHUNK:
        for table in ("request_rollup", "request_latency"):
            sql, params = rl.purge_rollups_sql(table, _placeholder, before)
            conn.execute(sql, params)
    return int(deleted)
