"""A PostgreSQL write batch as one server-side function call: one round trip per group commit.

The Python path (:meth:`PostgresStore._commit_work`) needs a transaction held open across round
trips — ``BEGIN``, the locking reads, :func:`~modelyard.store._ledger.plan_batch` in Python, the
write, ``COMMIT`` — because the plan needs the locked rows. ``modelyard_commit_batch`` does the same
inside the server: it takes the locks in the same order (reservations by request_id, then budgets
by scope, scope_id, period), decides the batch by the rules of ``plan_batch``, writes, and returns
the decisions; called outside a transaction it commits on return, so a batch is one round trip.

``plan_batch`` stays the statement of the rules: this function mirrors it step for step (the
comments name the Python lines), and ``tests/store/test_pg_function.py`` runs random batches through
both and requires the same decisions and the same tables afterwards. Period starts are computed in
Python (:func:`~modelyard.store._ledger.period_start`) and passed in, so the calendar rule has one
home. Recovery of overdue reservations (rare: start-up) keeps the Python path.

Budgets are held in arrays indexed by their locked order; a reservation's budget rows are looked up
by one join per batch, not per reservation, so a batch of 500 stays a few set-based statements and
one loop over the reservations.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.store._ledger import period_start
from modelyard.store._sql import LEDGER_COLUMNS, RESERVATION_COLUMNS, attempt_to_row, reservation_to_row
from modelyard.store.base import BudgetSpec, Denied, Period, Reservation, Scope, Settlement

__all__ = ["MIGRATION_NAME", "call_arguments", "call_statement", "decisions", "migration"]

MIGRATION_NAME = "0005_commit_batch_function_v3"
"""Change the function only through a new migration name (``…_v4``): each version is created once
(``CREATE OR REPLACE``: a database that ran an earlier version gets this one on its next start).
v2 cached its statements' plans (``plan_cache_mode = auto`` on the function): a quarter less server
CPU per call on a warm table, but generic plans made while the tables were small held the store to
2,500/s and let the backlog grow at 2,000/s (benchmarks/RESULTS.md), so v3 plans every call again,
as the session asks. v3 keeps v2's other change: no reservation query for a batch without
reservations."""

FUNCTION = "modelyard_commit_batch"

_LEDGER_TYPES = (
    "text",
    "integer",
    "text",
    "text",
    "text",
    "text",
    "text",  # tags as JSON text, rebuilt into text[]
    "text",
    "text",
    "text",
    "boolean",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "text",
    "integer",
    "double precision",
    "double precision",
    "double precision",
)
_RESERVATION_TYPES = (
    "text",
    "text",
    "bigint",
    "text",  # budgets as JSON text: [[scope, scope_id], ...]
    "text",
    "text",
    "text",
    "text",
    "text",  # tags as JSON text
    "text",
    "double precision",
    "double precision",
)
assert len(_LEDGER_TYPES) == len(LEDGER_COLUMNS) and len(_RESERVATION_TYPES) == len(RESERVATION_COLUMNS)


def _params(prefix: str, names: tuple[str, ...], types: tuple[str, ...]) -> str:
    return ", ".join(f"{prefix}{name} {kind}[]" for name, kind in zip(names, types, strict=True))


def _function_sql(s: str) -> str:
    ledger_values_sql = ", ".join(
        "ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb))" if name == "tags" else f"u.{name}"
        for name in LEDGER_COLUMNS
    )
    ledger_arrays_sql = ", ".join(f"l_{name}" for name in LEDGER_COLUMNS)
    ledger_names_sql = ", ".join(LEDGER_COLUMNS)
    reservation_values_sql = ", ".join(f"u.{name}" for name in RESERVATION_COLUMNS)
    reservation_arrays_sql = ", ".join(f"r_{name}" for name in RESERVATION_COLUMNS)
    reservation_names_sql = ", ".join(RESERVATION_COLUMNS)
    ledger_params_sql = _params("l_", LEDGER_COLUMNS, _LEDGER_TYPES)
    reservation_params_sql = _params("r_", RESERVATION_COLUMNS, _RESERVATION_TYPES)
    return f"""
CREATE OR REPLACE FUNCTION {s}.{FUNCTION}(
    p_now double precision, p_daily_start double precision, p_monthly_start double precision,
    p_settle_ids text[], p_row_settlement integer[],
    {ledger_params_sql},
    {reservation_params_sql},
    OUT settled integer, OUT denied_at integer[], OUT denied_scope text[], OUT denied_scope_id text[],
    OUT denied_period text[], OUT denied_limit bigint[], OUT denied_spend bigint[],
    OUT denied_reserved bigint[]
) LANGUAGE plpgsql AS $fn$
DECLARE
    b_scope text[]; b_scope_id text[]; b_period text[]; b_limit bigint[]; b_spend bigint[];
    b_reserved bigint[]; b_start double precision[]; b_dirty boolean[];
    v_pending text[]; v_stored text[]; v_settled text[] := '{{}}'; v_admitted integer[] := '{{}}';
    v_admitted_ids text[] := '{{}}'; v_start double precision; v_denied integer; bi integer; rec record;
BEGIN
    denied_at := '{{}}'; denied_scope := '{{}}'; denied_scope_id := '{{}}'; denied_period := '{{}}';
    denied_limit := '{{}}'; denied_spend := '{{}}'; denied_reserved := '{{}}';

    -- Lock order as the Python path: reservations by request_id, then budgets. pending: the
    -- stored reservations still pending among those settled; stored: every one locked.
    SELECT coalesce(array_agg(r.request_id)
                    FILTER (WHERE r.status = 'pending' AND r.request_id = ANY(p_settle_ids)), '{{}}'),
           coalesce(array_agg(r.request_id), '{{}}')
      INTO v_pending, v_stored
      FROM (SELECT request_id, status FROM {s}.reservations
             WHERE request_id = ANY(p_settle_ids || r_request_id) ORDER BY request_id FOR UPDATE) AS r;
    -- budgets: every row of every (scope, id) of the pending ones and of every reservation asked
    SELECT coalesce(array_agg(b.scope ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.scope_id ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.period ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.limit_nano ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.spend_nano ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.reserved_nano ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(b.period_start ORDER BY b.scope, b.scope_id, b.period), '{{}}'),
           coalesce(array_agg(false), '{{}}')
      INTO b_scope, b_scope_id, b_period, b_limit, b_spend, b_reserved, b_start, b_dirty
      FROM (SELECT * FROM {s}.budgets WHERE (scope, scope_id) IN (
                SELECT k->>0, k->>1 FROM {s}.reservations AS r, jsonb_array_elements(r.budgets::jsonb) AS k
                 WHERE r.request_id = ANY(v_pending)
                UNION
                SELECT k->>0, k->>1 FROM unnest(r_budgets) AS j, jsonb_array_elements(j::jsonb) AS k)
            ORDER BY scope, scope_id, period FOR UPDATE) AS b;

    IF cardinality(p_settle_ids) > 0 THEN
    -- Settlements, in order: a ledger row counts once (the first time its (request_id, attempt) is
    -- seen in the batch, unless a pending request's row is stored already); the first settlement of
    -- a pending reservation settles it: spend += its counted rows, reserved -= its max cost.
    FOR rec IN
        WITH rows_in AS MATERIALIZED (
            SELECT u.s, u.request_id, u.attempt, u.cost,
                   row_number() OVER (PARTITION BY u.request_id, u.attempt ORDER BY u.o) = 1 AS first
              FROM unnest(p_row_settlement, l_request_id, l_attempt, l_cost_nano) WITH ORDINALITY
                   AS u(s, request_id, attempt, cost, o)
        ), costs AS (
            SELECT r.s, sum(r.cost) AS cost FROM rows_in AS r
             WHERE r.first AND NOT (
                   EXISTS (SELECT 1 FROM {s}.ledger AS x
                            WHERE x.request_id = r.request_id AND x.attempt = r.attempt)
                   AND r.request_id = ANY(v_pending))
             GROUP BY r.s
        ), firsts AS (
            SELECT u.s, u.request_id, row_number() OVER (PARTITION BY u.request_id ORDER BY u.s) = 1 AS first
              FROM unnest(p_settle_ids) WITH ORDINALITY AS u(request_id, s)
        )
        SELECT f.s, f.request_id, coalesce(c.cost, 0)::bigint AS cost, r.max_cost_nano,
               ARRAY(SELECT b FROM jsonb_array_elements(r.budgets::jsonb) WITH ORDINALITY AS k(key, pos)
                       JOIN generate_subscripts(b_scope, 1) AS b
                         ON b_scope[b] = k.key->>0 AND b_scope_id[b] = k.key->>1
                      ORDER BY k.pos, b) AS budget_rows
          FROM firsts AS f
          JOIN {s}.reservations AS r ON r.request_id = f.request_id
          LEFT JOIN costs AS c ON c.s = f.s
         WHERE f.first AND f.request_id = ANY(v_pending)
         ORDER BY f.s
    LOOP
        v_settled := v_settled || rec.request_id;
        FOREACH bi IN ARRAY rec.budget_rows LOOP
            v_start := CASE b_period[bi] WHEN 'total' THEN 0 WHEN 'daily' THEN p_daily_start
                                        WHEN 'monthly' THEN p_monthly_start END;
            IF v_start IS NULL THEN
                RAISE EXCEPTION 'unknown budget period %: use daily, monthly or total', b_period[bi];
            END IF;
            IF v_start > b_start[bi] THEN
                b_spend[bi] := 0; b_start[bi] := v_start;
            END IF;
            b_spend[bi] := b_spend[bi] + rec.cost;
            b_reserved[bi] := greatest(0, b_reserved[bi] - rec.max_cost_nano);
            b_dirty[bi] := true;
        END LOOP;
    END LOOP;
    END IF;

    -- Reservations, in arrival order, each against the state the previous ones left; one already
    -- stored, or admitted earlier in this batch, is never reserved twice (its decision: admitted).
    IF cardinality(r_request_id) > 0 THEN
    FOR rec IN
        SELECT u.o::integer AS o, u.request_id, u.cost,
               u.request_id = ANY(v_stored) AS stored,
               row_number() OVER (PARTITION BY u.request_id ORDER BY u.o) > 1 AS repeated,
               ARRAY(SELECT b FROM jsonb_array_elements(u.budgets::jsonb) WITH ORDINALITY AS k(key, pos)
                       JOIN generate_subscripts(b_scope, 1) AS b
                         ON b_scope[b] = k.key->>0 AND b_scope_id[b] = k.key->>1
                      ORDER BY k.pos, b) AS budget_rows
          FROM unnest(r_request_id, r_max_cost_nano, r_budgets) WITH ORDINALITY
               AS u(request_id, cost, budgets, o)
         ORDER BY u.o
    LOOP
        CONTINUE WHEN rec.stored OR (rec.repeated AND rec.request_id = ANY(v_admitted_ids));
        v_denied := NULL;
        FOREACH bi IN ARRAY rec.budget_rows LOOP
            v_start := CASE b_period[bi] WHEN 'total' THEN 0 WHEN 'daily' THEN p_daily_start
                                        WHEN 'monthly' THEN p_monthly_start END;
            IF v_start IS NULL THEN
                RAISE EXCEPTION 'unknown budget period %: use daily, monthly or total', b_period[bi];
            END IF;
            IF v_start > b_start[bi] THEN
                b_spend[bi] := 0; b_start[bi] := v_start; b_dirty[bi] := true;
            END IF;
        END LOOP;
        IF rec.cost > 0 THEN
            FOREACH bi IN ARRAY rec.budget_rows LOOP
                IF b_spend[bi] + b_reserved[bi] + rec.cost > b_limit[bi] THEN
                    v_denied := bi;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF v_denied IS NOT NULL THEN
            denied_at := denied_at || rec.o;
            denied_scope := denied_scope || b_scope[v_denied];
            denied_scope_id := denied_scope_id || b_scope_id[v_denied];
            denied_period := denied_period || b_period[v_denied];
            denied_limit := denied_limit || b_limit[v_denied];
            denied_spend := denied_spend || b_spend[v_denied];
            denied_reserved := denied_reserved || b_reserved[v_denied];
            CONTINUE;
        END IF;
        IF rec.cost > 0 THEN
            FOREACH bi IN ARRAY rec.budget_rows LOOP
                b_reserved[bi] := b_reserved[bi] + rec.cost;
                b_dirty[bi] := true;
            END LOOP;
        END IF;
        v_admitted := v_admitted || rec.o;
        v_admitted_ids := v_admitted_ids || rec.request_id;
    END LOOP;
    END IF;

    -- The writes: what plan_batch's BatchPlan holds.
    IF true = ANY(b_dirty) THEN
    UPDATE {s}.budgets AS b
       SET spend_nano = u.spend, reserved_nano = u.reserved, period_start = u.pstart
      FROM unnest(b_scope, b_scope_id, b_period, b_spend, b_reserved, b_start, b_dirty)
           AS u(scope, scope_id, period, spend, reserved, pstart, dirty)
     WHERE u.dirty AND b.scope = u.scope AND b.scope_id = u.scope_id AND b.period = u.period;
    END IF;
    IF cardinality(v_admitted) > 0 THEN
        INSERT INTO {s}.reservations ({", ".join(RESERVATION_COLUMNS)})
            SELECT {reservation_values_sql}
              FROM unnest({reservation_arrays_sql}) WITH ORDINALITY AS u({reservation_names_sql}, o)
              JOIN unnest(v_admitted) AS a(o) USING (o)
             ORDER BY o
            ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(v_settled) > 0 THEN
        UPDATE {s}.reservations SET status = 'settled', settled_at = p_now WHERE request_id = ANY(v_settled);
    END IF;
    IF cardinality(l_request_id) > 0 THEN
    INSERT INTO {s}.ledger ({", ".join(LEDGER_COLUMNS)})
        SELECT {ledger_values_sql} FROM (
            SELECT *, row_number() OVER (PARTITION BY u.request_id, u.attempt ORDER BY u.o) AS n
              FROM unnest({ledger_arrays_sql}) WITH ORDINALITY AS u({ledger_names_sql}, o)) AS u
         WHERE u.n = 1 ORDER BY u.o
        ON CONFLICT DO NOTHING;
    END IF;
    settled := cardinality(v_settled);
END
$fn$
"""


def migration(schema: str) -> tuple[str, tuple[str, ...]]:
    """The migration that creates the function for tables in ``schema`` (already quoted)."""
    return MIGRATION_NAME, (_function_sql(schema),)


def call_statement(schema: str) -> str:
    """One batch: the parameters come from :func:`call_arguments`."""
    count = 5 + len(LEDGER_COLUMNS) + len(RESERVATION_COLUMNS)
    return f"SELECT * FROM {schema}.{FUNCTION}({', '.join(f'${i}' for i in range(1, count + 1))})"


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _tags(tags: tuple[str, ...]) -> str:
    return orjson.dumps(list(tags)).decode()


def call_arguments(reserves: list[Reservation], settlements: list[Settlement], now: float) -> list[Any]:
    """The parameters of :func:`call_statement`: the batch as one array per column."""
    row_settlement: list[int] = []
    ledger: list[tuple[Any, ...]] = []
    for index, settlement in enumerate(settlements, start=1):
        for row in settlement.rows:
            row_settlement.append(index)
            ledger.append(attempt_to_row(row, _tags))
    return [
        now,
        period_start(Period.DAILY, now),
        period_start(Period.MONTHLY, now),
        [s.request_id for s in settlements],
        row_settlement,
        *_columns(ledger, len(LEDGER_COLUMNS)),
        *_columns([reservation_to_row(r) for r in reserves], len(RESERVATION_COLUMNS)),
    ]


def decisions(result: Any, count: int) -> tuple[list[Denied | None], int]:
    """(one decision per reservation, in order; the number settled) from the function's row."""
    out: list[Denied | None] = [None] * count
    for at, scope, scope_id, period, limit, spend, reserved in zip(
        result["denied_at"],
        result["denied_scope"],
        result["denied_scope_id"],
        result["denied_period"],
        result["denied_limit"],
        result["denied_spend"],
        result["denied_reserved"],
        strict=True,
    ):
        out[at - 1] = Denied(BudgetSpec(Scope(scope), scope_id, Period(period), limit), spend, reserved)
    return out, int(result["settled"])
