"""Request-log SQL shared by the SQLite and PostgreSQL stores: schema, writes, searches, rollups.

Values reach SQL only as bound parameters (``param`` appends one and returns its placeholder);
what is interpolated is table names, column lists and fixed clauses chosen from whitelists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.store.requestlog import (
    ERROR_OUTCOMES,
    LATENCY_COLUMNS,
    LATENCY_KEY,
    REQUEST_COLUMNS,
    ROLLUP_COLUMNS,
    ROLLUP_DIMENSIONS,
    ROLLUP_KEY,
    ROLLUP_SUMS,
    RequestQuery,
    RollupQuery,
    Visibility,
    time_ranges,
)

MIGRATION_NAME = "0002_request_log"
PURGE_CHUNK = 5000
TEXT_SCAN_LIMIT = 10_000
"""A text search reads at most this many of the newest captured requests matching its other
filters: substring search has no index, and this bounds its time (narrow the range, or add a
key/model filter, to search older ones)."""
ROLLUP_GROUPS = (*ROLLUP_DIMENSIONS, "tags", "bucket")
LIST_COLUMNS = tuple(c for c in REQUEST_COLUMNS if c not in ("prompt", "response"))


@dataclass(frozen=True, slots=True)
class Types:
    """Column types of one backend."""

    real: str
    integer: str
    text: str
    boolean: str
    clustered: str
    """Table option that stores rows in primary-key order (SQLite's WITHOUT ROWID), so a time
    range of rollups is one sequential read."""


SQLITE_TYPES = Types("REAL", "INTEGER", "TEXT", "INTEGER", " WITHOUT ROWID")
POSTGRES_TYPES = Types("double precision", "bigint", "text", "boolean", "")


def migration(s: str, ty: Types) -> tuple[str, ...]:
    """The statements of migration 0002; ``s`` prefixes table names (``""`` or ``"schema".``)."""
    r, i, t, b, clustered = ty.real, ty.integer, ty.text, ty.boolean, ty.clustered
    return (
        f"""CREATE TABLE {s}requests (
            request_id {t} PRIMARY KEY, created_at {r} NOT NULL, duration_ms {r} NOT NULL,
            method {t} NOT NULL, path {t} NOT NULL, operation {t} NOT NULL, dialect {t} NOT NULL,
            key_id {t}, key_hint {t} NOT NULL, team_id {t}, user_id {t}, tags {t} NOT NULL,
            model {t}, deployment {t}, provider {t}, response_model {t}, route {t},
            local {b} NOT NULL, stream {b} NOT NULL, status {i} NOT NULL, outcome {t} NOT NULL,
            error_type {t}, error_message {t}, tokens_in {i} NOT NULL, tokens_out {i} NOT NULL,
            tokens_cache_read {i} NOT NULL, tokens_cache_write {i} NOT NULL, cost_nano {i} NOT NULL,
            ttft_ms {r}, overhead_ms {r} NOT NULL, attempts {t} NOT NULL, cache {t},
            captured {b} NOT NULL, prompt {t}, response {t})""",
        f"CREATE INDEX requests_created ON {s}requests (created_at)",
        f"CREATE INDEX requests_key ON {s}requests (key_id, created_at)",
        f"CREATE INDEX requests_team ON {s}requests (team_id, created_at)",
        f"CREATE INDEX requests_model ON {s}requests (model, created_at)",
        f"CREATE INDEX requests_deployment ON {s}requests (deployment, created_at)",
        # Text search reads only rows with a stored prompt or answer.
        f"CREATE INDEX requests_captured ON {s}requests (captured, created_at)",
        f"""CREATE TABLE {s}request_rollup (
            res {i} NOT NULL, bucket {i} NOT NULL, model {t} NOT NULL, deployment {t} NOT NULL,
            key_id {t} NOT NULL, team_id {t} NOT NULL, local {b} NOT NULL, route {t} NOT NULL,
            cache {t} NOT NULL, tags {t} NOT NULL,
            requests {i} NOT NULL, errors {i} NOT NULL, tokens_in {i} NOT NULL,
            tokens_out {i} NOT NULL, tokens_cache_read {i} NOT NULL, tokens_cache_write {i} NOT NULL,
            cost_nano {i} NOT NULL, duration_ms_sum {r} NOT NULL, ttft_count {i} NOT NULL,
            ttft_ms_sum {r} NOT NULL,
            PRIMARY KEY ({", ".join(ROLLUP_KEY)})){clustered}""",
        f"""CREATE TABLE {s}request_latency (
            res {i} NOT NULL, bucket {i} NOT NULL, model {t} NOT NULL, deployment {t} NOT NULL,
            metric {t} NOT NULL, slot {i} NOT NULL, count {i} NOT NULL,
            PRIMARY KEY ({", ".join(LATENCY_KEY)})){clustered}""",
    )


Placeholder = Callable[[int], str]


class _Params:
    """Collects bound values; ``param(v)`` returns the placeholder for ``v``."""

    def __init__(self, placeholder: Placeholder) -> None:
        self.values: list[Any] = []
        self._placeholder = placeholder

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self._placeholder(len(self.values))


def insert_requests_sql(table: str, clause_values: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(REQUEST_COLUMNS)}) VALUES ({clause_values}) ON CONFLICT DO NOTHING"
    )


def upsert_rollup_sql(table: str, table_alias: str, clause_values: str) -> str:
    """Add a batch's sums to a rollup row (creating it if new)."""
    clause_set = ", ".join(f"{col} = {table_alias}.{col} + excluded.{col}" for col in ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(ROLLUP_COLUMNS)}) VALUES ({clause_values}) "
        f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {clause_set}"
    )


def upsert_latency_sql(table: str, table_alias: str, clause_values: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(LATENCY_COLUMNS)}) VALUES ({clause_values}) "
        f"ON CONFLICT ({', '.join(LATENCY_KEY)}) DO UPDATE SET count = {table_alias}.count + excluded.count"
    )


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _visibility(visibility: Visibility, param: _Params, table_keys: str, *, has_user: bool) -> list[str]:
    where = []
    if visibility.key_id is not None:
        where.append(f"key_id = {param(visibility.key_id)}")
    if visibility.team_id is not None:
        where.append(f"team_id = {param(visibility.team_id)}")
    if visibility.user_id is not None:
        if has_user:
            where.append(f"user_id = {param(visibility.user_id)}")
        else:
            where.append(
                f"key_id IN (SELECT id FROM {table_keys} WHERE user_id = {param(visibility.user_id)})"
            )
    if visibility.org_id is not None:
        where.append(f"key_id IN (SELECT id FROM {table_keys} WHERE org_id = {param(visibility.org_id)})")
    return where


def _status(status: str, param: _Params) -> str:
    value = status.strip().lower()
    if value.isdigit():
        return f"status = {param(int(value))}"
    if len(value) == 3 and value[0] in "12345" and value[1:] == "xx":
        low = int(value[0]) * 100
        return f"(status >= {param(low)} AND status < {param(low + 100)})"
    if value == "errors":
        return f"outcome IN ({', '.join(param(o) for o in ERROR_OUTCOMES)})"
    return f"outcome = {param(value)}"


def search_sql(
    query: RequestQuery,
    *,
    table: str,
    table_keys: str,
    placeholder: Placeholder,
    clause_like: str,
    with_bodies: bool = False,
    request_id: str | None = None,
) -> tuple[str, list[Any]]:
    """The request-log search (newest first). ``clause_like``: ``LIKE`` (SQLite, ASCII
    case-insensitive) or ``ILIKE`` (PostgreSQL)."""
    param = _Params(placeholder)
    where = ["1 = 1"]
    if request_id is not None:
        where.append(f"request_id = {param(request_id)}")
    if query.since is not None:
        where.append(f"created_at >= {param(float(query.since))}")
    if query.until is not None:
        where.append(f"created_at < {param(float(query.until))}")
    for column, value in (
        ("key_id", query.key_id),
        ("team_id", query.team_id),
        ("model", query.model),
        ("deployment", query.deployment),
    ):
        if value is not None:
            where.append(f"{column} = {param(value)}")
    if query.status:
        where.append(_status(query.status, param))
    if query.text:
        where.append(f"captured = {param(True)}")
    where += _visibility(query.visibility, param, table_keys, has_user=True)
    source = table
    if query.text:
        # Substring search has no index: match only the newest TEXT_SCAN_LIMIT captured rows that
        # pass every other filter (a derived table, so no plan can run the match on more).
        source = (
            f"(SELECT * FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, request_id DESC LIMIT {param(TEXT_SCAN_LIMIT)}) AS c"
        )
        pattern = "%" + escape_like(query.text) + "%"
        where = [
            f"(prompt {clause_like} {param(pattern)} ESCAPE '\\' "
            f"OR response {clause_like} {param(pattern)} ESCAPE '\\')"
        ]
    cols = ", ".join(REQUEST_COLUMNS) if with_bodies else ", ".join(LIST_COLUMNS) + ", NULL, NULL"
    clause_limit = param(max(1, min(int(query.limit), 10_000)))
    sql = (
        f"SELECT {cols} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, request_id DESC LIMIT {clause_limit}"
    )
    return sql, param.values


def rollup_sql(
    query: RollupQuery, *, table: str, table_keys: str, placeholder: Placeholder
) -> tuple[str, list[Any]]:
    """Sums over the rollup rows of [since, until) at the query's resolution, grouped as asked.
    Result rows: the group columns, then one sum per :data:`ROLLUP_SUMS`."""
    for name in query.group_by:
        if name not in ROLLUP_GROUPS:
            raise ValueError(
                f"cannot group the request log by {name!r}: use one of {', '.join(ROLLUP_GROUPS)}"
            )
    param = _Params(placeholder)
    where = [_time_clause(query.ranges(), param)]
    where += _visibility(query.visibility, param, table_keys, has_user=False)
    clause_sums = ", ".join(f"SUM({col})" for col in ROLLUP_SUMS)
    group_cols = ", ".join(query.group_by)
    if group_cols:
        sql = (
            f"SELECT {group_cols}, {clause_sums} FROM {table} WHERE {' AND '.join(where)} "
            f"GROUP BY {group_cols} ORDER BY {group_cols}"
        )
    else:
        sql = f"SELECT {clause_sums} FROM {table} WHERE {' AND '.join(where)}"
    return sql, param.values


def _time_clause(ranges: Sequence[tuple[int, int, int]], param: _Params) -> str:
    """Rows of the given (res, first bucket, end) ranges; each one is a primary-key range scan."""
    clause_parts = [
        f"(res = {param(res)} AND bucket >= {param(first)} AND bucket < {param(end)})"
        for res, first, end in ranges
    ]
    return "(" + " OR ".join(clause_parts) + ")"


def latency_sql(
    since: float, until: float, res: int, *, table: str, placeholder: Placeholder
) -> tuple[str, list[Any]]:
    """Histogram counts per (model, deployment, metric, slot) over [since, until)."""
    param = _Params(placeholder)
    clause_time = _time_clause(time_ranges(since, until, res), param)
    sql = (
        f"SELECT model, deployment, metric, slot, SUM(count) FROM {table} "
        f"WHERE {clause_time} GROUP BY model, deployment, metric, slot"
    )
    return sql, param.values


def purge_requests_sql(table: str, placeholder: Placeholder, before: float) -> tuple[str, list[Any]]:
    """Delete one chunk of requests older than ``before`` (run until it deletes nothing)."""
    param = _Params(placeholder)
    sql = (
        f"DELETE FROM {table} WHERE request_id IN "
        f"(SELECT request_id FROM {table} WHERE created_at < {param(before)} LIMIT {param(PURGE_CHUNK)})"
    )
    return sql, param.values


def purge_rollups_sql(table: str, placeholder: Placeholder, before: float) -> tuple[str, list[Any]]:
    param = _Params(placeholder)
    return f"DELETE FROM {table} WHERE bucket < {param(int(before))}", param.values


def rollup_result(rows: Sequence[Sequence[Any]], group_by: Sequence[str]) -> list[dict[str, Any]]:
    """Rollup query rows as dicts: group values, then sums (ints; the ``*_sum`` ones floats)."""
    out = []
    n = len(group_by)
    for row in rows:
        item: dict[str, Any] = dict(zip(group_by, row[:n], strict=True))
        if "local" in item:
            item["local"] = bool(item["local"])
        for name, value in zip(ROLLUP_SUMS, row[n:], strict=True):
            item[name] = float(value or 0) if name.endswith("_sum") else int(value or 0)
        out.append(item)
    return out
