"""A PostgreSQL write batch's changes in one statement.

:func:`~modelyard.store._ledger.plan_batch` decides what a batch changes — budget rows, new
reservations, reservations settled, ledger rows. Written as four ``executemany`` calls that is four
round trips and one server-side execution per row; here it is one statement: data-modifying CTEs
over ``unnest``-ed column arrays, so a batch of any size costs one round trip and four set-based
writes. The four parts touch disjoint rows (a reservation made in a batch is never settled by the
same batch: settlements are planned before reservations), so no part needs to see another's
effects, as data-modifying CTEs cannot.

Arrays of arrays do not survive ``unnest`` (it flattens them), so the ledger's ``tags`` (``text[]``
per row) travel as JSON text and are rebuilt per row.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.store._ledger import BatchPlan
from modelyard.store._sql import LEDGER_COLUMNS, RESERVATION_COLUMNS, attempt_to_row, reservation_to_row

__all__ = ["has_writes", "plan_arguments", "plan_statement"]

_RESERVATION_TYPES = (
    "text",  # request_id
    "text",  # status
    "bigint",  # max_cost_nano
    "text",  # budgets (JSON)
    "text",  # key_id
    "text",  # team_id
    "text",  # user_id
    "text",  # org_id
    "text",  # tags (JSON)
    "text",  # model
    "double precision",  # created_at
    "double precision",  # deadline_at
)
_LEDGER_TYPES = (
    "text",  # request_id
    "integer",  # attempt
    "text",  # key_id
    "text",  # team_id
    "text",  # user_id
    "text",  # org_id
    "text",  # tags, as JSON: rebuilt into text[] below
    "text",  # model_requested
    "text",  # deployment
    "text",  # route_reason
    "boolean",  # local
    "bigint",  # tokens_in
    "bigint",  # tokens_out
    "bigint",  # tokens_cache_read
    "bigint",  # tokens_cache_write
    "bigint",  # cost_nano
    "text",  # status
    "integer",  # http_status
    "double precision",  # latency_ms
    "double precision",  # ttft_ms
    "double precision",  # created_at
)
assert len(_RESERVATION_TYPES) == len(RESERVATION_COLUMNS) and len(_LEDGER_TYPES) == len(LEDGER_COLUMNS)


def _unnest(first: int, types: tuple[str, ...], names: tuple[str, ...]) -> str:
    params = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(types))
    return f"unnest({params}) AS u({', '.join(names)})"


def plan_statement(schema: str) -> str:
    """The statement for tables in ``schema`` (already quoted); parameters from :func:`plan_arguments`."""
    budgets_sql = _unnest(
        1,
        ("text", "text", "text", "bigint", "bigint", "double precision"),
        ("scope", "scope_id", "period", "spend_nano", "reserved_nano", "period_start"),
    )
    reservations_sql = _unnest(7, _RESERVATION_TYPES, RESERVATION_COLUMNS)
    settled_at_sql = f"${7 + len(RESERVATION_COLUMNS)}"
    settled_ids_sql = f"${8 + len(RESERVATION_COLUMNS)}::text[]"
    ledger_sql = _unnest(9 + len(RESERVATION_COLUMNS), _LEDGER_TYPES, LEDGER_COLUMNS)
    ledger_values_sql = ", ".join(
        "ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb))" if name == "tags" else "u." + name
        for name in LEDGER_COLUMNS
    )
    return f"""
        WITH budget_rows AS (
            UPDATE {schema}.budgets AS b
            SET spend_nano = u.spend_nano, reserved_nano = u.reserved_nano, period_start = u.period_start
            FROM {budgets_sql}
            WHERE b.scope = u.scope AND b.scope_id = u.scope_id AND b.period = u.period
            RETURNING 1
        ), new_reservations AS (
            INSERT INTO {schema}.reservations ({", ".join(RESERVATION_COLUMNS)})
            SELECT * FROM {reservations_sql}
            ON CONFLICT DO NOTHING
            RETURNING 1
        ), settled AS (
            UPDATE {schema}.reservations SET status = 'settled', settled_at = {settled_at_sql}
            WHERE request_id = ANY({settled_ids_sql})
            RETURNING 1
        ), ledger_rows AS (
            INSERT INTO {schema}.ledger ({", ".join(LEDGER_COLUMNS)})
            SELECT {ledger_values_sql} FROM {ledger_sql}
            ON CONFLICT DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM budget_rows), (SELECT count(*) FROM new_reservations),
               (SELECT count(*) FROM settled), (SELECT count(*) FROM ledger_rows)
    """


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def plan_arguments(plan: BatchPlan, now: float) -> list[Any]:
    """The parameters of :func:`plan_statement` for one batch: one array per column."""
    budgets = [
        (b.scope, b.scope_id, b.period, b.spend_nano, b.reserved_nano, b.period_start)
        for b in plan.dirty_budgets
    ]
    reservations = [reservation_to_row(r) for r in plan.new_reservations]
    ledger = [attempt_to_row(row, lambda tags: orjson.dumps(list(tags)).decode()) for row in plan.ledger_rows]
    return [
        *_columns(budgets, 6),
        *_columns(reservations, len(RESERVATION_COLUMNS)),
        now,
        list(plan.settled_ids),
        *_columns(ledger, len(LEDGER_COLUMNS)),
    ]


def has_writes(plan: BatchPlan) -> bool:
    return bool(plan.dirty_budgets or plan.new_reservations or plan.settled_ids or plan.ledger_rows)
