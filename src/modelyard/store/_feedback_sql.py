"""Smart-routing decisions and feedback, in SQLite and PostgreSQL: schema (migration
``0003_feedback``), rows, and the statements each backend runs.

* ``route_decisions``: one row per request a smart route decided (which model, why, for which
  key), so feedback can be checked and learned from on any replica and after a restart.
* ``feedback``: at most one row per request (a second submission replaces the first), with a copy
  of the decision it judged, so the bandits can be rebuilt from this table alone.

Values reach SQL only as bound parameters; table names come from the backend's own schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.store._requestlog_sql import POSTGRES_TYPES, SQLITE_TYPES, Types

MIGRATION_NAME = "0003_feedback"

DECISION_COLUMNS = (
    "request_id",
    "created_at",
    "key_id",
    "team_id",
    "route",
    "model",
    "task",
    "reason",
    "detail",
    "local_only",
    "rules",
)
FEEDBACK_COLUMNS = (
    "request_id",
    "created_at",
    "key_id",
    "score",
    "thumbs",
    "comment",
    "metadata",
    "route",
    "model",
    "task",
    "reason",
)


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A smart route's decision for one request."""

    request_id: str
    created_at: float
    key_id: str | None
    team_id: str | None
    route: str
    model: str
    task: str
    """The task bucket (``""``: none / unsure)."""
    reason: str
    detail: str
    local_only: bool
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """Feedback on one request, with the decision it judged (None for a request no route decided)."""

    request_id: str
    created_at: float
    key_id: str | None
    """The key that gave the feedback (None: the master key)."""
    score: float
    """0..1 (thumbs up = 1, down = 0)."""
    thumbs: str | None = None
    comment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    route: str | None = None
    model: str | None = None
    task: str | None = None
    reason: str | None = None


def migration(s: str, ty: Types) -> tuple[str, ...]:
    """The statements of migration 0003; ``s`` prefixes table names (``""`` or ``"schema".``)."""
    r, t, b = ty.real, ty.text, ty.boolean
    return (
        f"""CREATE TABLE {s}route_decisions (
            request_id {t} PRIMARY KEY, created_at {r} NOT NULL, key_id {t}, team_id {t},
            route {t} NOT NULL, model {t} NOT NULL, task {t} NOT NULL, reason {t} NOT NULL,
            detail {t} NOT NULL, local_only {b} NOT NULL, rules {t} NOT NULL)""",
        f"CREATE INDEX route_decisions_created ON {s}route_decisions (created_at)",
        f"""CREATE TABLE {s}feedback (
            request_id {t} PRIMARY KEY, created_at {r} NOT NULL, key_id {t}, score {r} NOT NULL,
            thumbs {t}, comment {t}, metadata {t} NOT NULL, route {t}, model {t}, task {t},
            reason {t})""",
        f"CREATE INDEX feedback_created ON {s}feedback (created_at)",
        f"CREATE INDEX feedback_route ON {s}feedback (route, created_at)",
    )


def decision_to_row(d: DecisionRow) -> tuple[Any, ...]:
    return (
        d.request_id,
        d.created_at,
        d.key_id,
        d.team_id,
        d.route,
        d.model,
        d.task,
        d.reason,
        d.detail,
        d.local_only,
        orjson.dumps(list(d.rules)).decode(),
    )


def decision_from_row(row: Sequence[Any]) -> DecisionRow:
    return DecisionRow(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], bool(row[9]),
        tuple(orjson.loads(row[10])),
    )  # fmt: skip


def feedback_to_row(f: FeedbackRow) -> tuple[Any, ...]:
    return (
        f.request_id,
        f.created_at,
        f.key_id,
        f.score,
        f.thumbs,
        f.comment,
        orjson.dumps(f.metadata).decode(),
        f.route,
        f.model,
        f.task,
        f.reason,
    )


def feedback_from_row(row: Sequence[Any]) -> FeedbackRow:
    return FeedbackRow(
        row[0], row[1], row[2], float(row[3]), row[4], row[5], orjson.loads(row[6]), row[7], row[8],
        row[9], row[10],
    )  # fmt: skip


_DECISION_COLS = ", ".join(DECISION_COLUMNS)
_FEEDBACK_COLS = ", ".join(FEEDBACK_COLUMNS)


def _insert_decisions(table: str, p: str) -> str:
    return f"INSERT INTO {table} ({_DECISION_COLS}) VALUES ({p}) ON CONFLICT (request_id) DO NOTHING"


def _upsert_feedback(table: str, p: str) -> str:
    clause_updates = ", ".join(f"{c} = excluded.{c}" for c in FEEDBACK_COLUMNS if c != "request_id")
    return (
        f"INSERT INTO {table} ({_FEEDBACK_COLS}) VALUES ({p}) "
        f"ON CONFLICT (request_id) DO UPDATE SET {clause_updates}"
    )


# -- SQLite: work run on the store's writer/reader threads ------------------------------------
SQLITE_MIGRATION = (MIGRATION_NAME, migration("", SQLITE_TYPES))
_SQLITE_INSERT_DECISIONS = _insert_decisions("route_decisions", ", ".join("?" * len(DECISION_COLUMNS)))
_SQLITE_UPSERT_FEEDBACK = _upsert_feedback("feedback", ", ".join("?" * len(FEEDBACK_COLUMNS)))


def sqlite_write_decisions(rows: Sequence[DecisionRow], conn: sqlite3.Connection) -> int:
    before = conn.total_changes
    conn.executemany(_SQLITE_INSERT_DECISIONS, [decision_to_row(r) for r in rows])
    return conn.total_changes - before


def sqlite_decision(request_id: str, conn: sqlite3.Connection) -> DecisionRow | None:
    row = conn.execute(
        f"SELECT {_DECISION_COLS} FROM route_decisions WHERE request_id = ?", (request_id,)
    ).fetchone()
    return None if row is None else decision_from_row(row)


def sqlite_put_feedback(row: FeedbackRow, conn: sqlite3.Connection) -> None:
    conn.execute(_SQLITE_UPSERT_FEEDBACK, feedback_to_row(row))


def sqlite_feedback(
    request_id: str | None, since: float, limit: int, conn: sqlite3.Connection
) -> list[FeedbackRow]:
    if request_id is not None:
        rows = conn.execute(
            f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE request_id = ?", (request_id,)
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE created_at >= ? ORDER BY created_at LIMIT ?",
            (since, limit),
        ).fetchall()
    return [feedback_from_row(r) for r in rows]


def sqlite_purge_decisions(before: float, conn: sqlite3.Connection) -> int:
    return conn.execute("DELETE FROM route_decisions WHERE created_at < ?", (before,)).rowcount


# -- PostgreSQL ---------------------------------------------------------------------------------
def postgres_migration(schema: str) -> tuple[str, tuple[str, ...]]:
    """Migration 0003 for tables in ``schema`` (already validated and quoted)."""
    return MIGRATION_NAME, migration(f"{schema}.", POSTGRES_TYPES)


def _dollars(n: int) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1))


class PostgresFeedback:
    """The decision and feedback statements of one schema, run on the store's pool."""

    def __init__(self, schema: str) -> None:
        self._t_decisions = f"{schema}.route_decisions"
        self._t_feedback = f"{schema}.feedback"
        self._insert = _insert_decisions(self._t_decisions, _dollars(len(DECISION_COLUMNS)))
        self._upsert = _upsert_feedback(self._t_feedback, _dollars(len(FEEDBACK_COLUMNS)))

    async def write_decisions(self, pool: Any, rows: Sequence[DecisionRow]) -> int:
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._insert, [decision_to_row(r) for r in rows])
        return len(rows)

    async def decision(self, pool: Any, request_id: str) -> DecisionRow | None:
        row = await pool.fetchrow(
            f"SELECT {_DECISION_COLS} FROM {self._t_decisions} WHERE request_id = $1", request_id
        )
        return None if row is None else decision_from_row(tuple(row))

    async def put_feedback(self, pool: Any, row: FeedbackRow) -> None:
        await pool.execute(self._upsert, *feedback_to_row(row))

    async def feedback(
        self, pool: Any, request_id: str | None, since: float, limit: int
    ) -> list[FeedbackRow]:
        if request_id is not None:
            rows = await pool.fetch(
                f"SELECT {_FEEDBACK_COLS} FROM {self._t_feedback} WHERE request_id = $1", request_id
            )
        else:
            rows = await pool.fetch(
                f"SELECT {_FEEDBACK_COLS} FROM {self._t_feedback} WHERE created_at >= $1 "
                "ORDER BY created_at LIMIT $2",
                since,
                limit,
            )
        return [feedback_from_row(tuple(r)) for r in rows]

    async def purge_decisions(self, pool: Any, before: float) -> int:
        status = await pool.execute(f"DELETE FROM {self._t_decisions} WHERE created_at < $1", before)
        return int(str(status).rsplit(" ", 1)[-1] or 0)


__all__ = [
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "MIGRATION_NAME",
    "SQLITE_MIGRATION",
    "DecisionRow",
    "FeedbackRow",
    "PostgresFeedback",
    "postgres_migration",
]
