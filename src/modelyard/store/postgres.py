"""The PostgreSQL store (asyncpg), for several gateway processes or hosts.

* **Driver.** asyncpg: natively asyncio (no thread hop), binary protocol, server-side prepared
  statements cached per connection, and ``executemany`` pipelined in one round trip — the hot
  path is a handful of statements per batch. psycopg 3 would also do; asyncpg is faster for this.
* **Transactions.** READ COMMITTED; a batch locks what it changes with ``SELECT … FOR UPDATE``,
  always reservations (by request_id) before budgets (by scope, scope_id, period), every process
  in the same order, so concurrent batches queue instead of deadlocking. A reservation's check and
  its update happen under the budget rows' locks: atomic across every process.
* **Durability.** The server's ``synchronous_commit`` (on by default): a commit is flushed to WAL
  before it is acknowledged. Group commit shares that flush across a batch.
* **One round trip per batch.** A group commit is one call of the server-side function
  ``modelyard_commit_batch`` (:mod:`~modelyard.store._pg_function`), outside any transaction: it
  locks, decides by the rules of ``plan_batch``, writes and commits on the server. The Python path
  (``BEGIN``, locking reads, ``plan_batch``, one write, ``COMMIT``) remains for recovery and as the
  reference the function is tested against (``server_side_commit=False``).
* **Two writers.** The reservation and the settlement writer (:mod:`~modelyard.store._batch`) each
  keep their own connection, so an admission never waits for a settlement batch's round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from modelyard.conversations.model import (
    ConversationItem,
    ConversationRecord,
    ConversationScope,
    JSONDict,
    StoredResponse,
    TurnOptions,
)
from modelyard.store import (
    _conversations_sql,
    _feedback_sql,
    _pg_commit,
    _pg_function,
    _requestlog_postgres,
    _sql,
)
from modelyard.store._batch import BatchingStore, CommitResult, Lane
from modelyard.store._feedback_sql import DecisionRow, FeedbackRow
from modelyard.store._ledger import (
    BudgetKey,
    BudgetRow,
    budget_keys,
    budget_states,
    period_start,
    plan_batch,
    recovery_settlement,
)
from modelyard.store.base import (
    AttemptRow,
    BudgetSpec,
    BudgetState,
    KeyRecord,
    Period,
    Reservation,
    Scope,
    Settlement,
)
from modelyard.store.requestlog import RequestQuery, RequestRow, RollupQuery, Visibility

__all__ = ["PostgresStore"]

_TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.LockNotAvailableError,
    OSError,
    TimeoutError,
)


def _migrations(s: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        (
            "0001_initial",
            (
                f"""CREATE TABLE {s}.keys (
                    id text PRIMARY KEY, hash text NOT NULL UNIQUE, hint text NOT NULL,
                    role text NOT NULL, name text, org_id text, team_id text, user_id text,
                    tags text NOT NULL, models text, max_tokens bigint, rpm bigint, tpm bigint,
                    expires_at double precision, revoked_at double precision,
                    created_at double precision NOT NULL, created_by text,
                    store_prompts boolean NOT NULL, metadata text NOT NULL)""",
                f"CREATE INDEX keys_team ON {s}.keys (team_id)",
                f"CREATE INDEX keys_user ON {s}.keys (user_id)",
                f"CREATE INDEX keys_org ON {s}.keys (org_id)",
                f"""CREATE TABLE {s}.budgets (
                    scope text NOT NULL, scope_id text NOT NULL, period text NOT NULL,
                    limit_nano bigint NOT NULL, spend_nano bigint NOT NULL DEFAULT 0,
                    reserved_nano bigint NOT NULL DEFAULT 0, period_start double precision NOT NULL,
                    PRIMARY KEY (scope, scope_id, period))""",
                f"""CREATE TABLE {s}.reservations (
                    request_id text PRIMARY KEY,
                    status text NOT NULL CHECK (status IN ('pending', 'settled')),
                    max_cost_nano bigint NOT NULL, budgets text NOT NULL, key_id text,
                    team_id text, user_id text, org_id text, tags text NOT NULL, model text NOT NULL,
                    created_at double precision NOT NULL, deadline_at double precision NOT NULL,
                    settled_at double precision)""",
                f"CREATE INDEX reservations_pending ON {s}.reservations (deadline_at) "
                "WHERE status = 'pending'",
                f"""CREATE TABLE {s}.ledger (
                    request_id text NOT NULL, attempt integer NOT NULL, key_id text, team_id text,
                    user_id text, org_id text, tags text[] NOT NULL, model_requested text NOT NULL,
                    deployment text NOT NULL, route_reason text NOT NULL, local boolean NOT NULL,
                    tokens_in bigint NOT NULL, tokens_out bigint NOT NULL,
                    tokens_cache_read bigint NOT NULL, tokens_cache_write bigint NOT NULL,
                    cost_nano bigint NOT NULL, status text NOT NULL, http_status integer,
                    latency_ms double precision NOT NULL, ttft_ms double precision,
                    created_at double precision NOT NULL, PRIMARY KEY (request_id, attempt))""",
                f"CREATE INDEX ledger_created ON {s}.ledger (created_at)",
                f"CREATE INDEX ledger_key ON {s}.ledger (key_id, created_at)",
                f"CREATE INDEX ledger_team ON {s}.ledger (team_id, created_at)",
                f"CREATE INDEX ledger_model ON {s}.ledger (model_requested, created_at)",
                f"CREATE INDEX ledger_deployment ON {s}.ledger (deployment, created_at)",
            ),
        ),
        _requestlog_postgres.migration(s),
        _feedback_sql.postgres_migration(s),
        _conversations_sql.PostgresConversations.migration(s),
        _pg_function.migration(s),
    )


def _placeholders(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


def _usable(conn: Any) -> bool:
    """Whether a held pool connection is still open (asyncpg returns a dead one to the pool itself)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _tags_from_array(tags: list[str]) -> tuple[str, ...]:
    return tuple(tags)


class PostgresStore(BatchingStore):
    """A :class:`~modelyard.store.base.Store` in PostgreSQL.

    ``schema`` (default ``public``): where the tables live (created if missing).
    ``pool_size`` (default 10): most connections held; one is the batch writer's at a time.
    ``server_settings`` (default none): extra session settings for every connection, e.g.
    ``{"application_name": "modelyard"}``.
    ``clock`` (default ``time.time``): the time used for budget periods (tests move it).
    ``server_side_commit`` (default true): commit a batch with one call of the server-side function;
    false plans it in Python over several round trips (the reference; slower).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        server_settings: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        max_queued_settlements: int = 100_000,
        max_batch: int = 500,
        server_side_commit: bool = True,
    ) -> None:
        super().__init__(max_queued_settlements=max_queued_settlements, max_batch=max_batch, clock=clock)
        self.dsn = dsn
        self.server_side_commit = server_side_commit
        self.schema = _sql.check_identifier(schema, "PostgreSQL schema name")
        self.pool_size = pool_size
        self.server_settings = dict(server_settings or {})
        self._pool: asyncpg.Pool | None = None
        self._lane_conns: dict[Lane, Any] = {}
        """Each group-commit writer's own connection, held between commits (no pool round trip)."""
        s = f'"{self.schema}"'
        self._write_plan = _pg_commit.plan_statement(s)
        self._commit_call = _pg_function.call_statement(s)
        self._t_keys, self._t_budgets = f"{s}.keys", f"{s}.budgets"
        self._t_res, self._t_ledger = f"{s}.reservations", f"{s}.ledger"
        self._res_select = f"SELECT {', '.join(_sql.RESERVATION_COLUMNS)} FROM {self._t_res}"
        self._budget_select = (
            "SELECT scope, scope_id, period, limit_nano, spend_nano, reserved_nano, period_start "
            f"FROM {self._t_budgets}"
        )
        self._key_select = f"SELECT {', '.join(_sql.KEY_COLUMNS)} FROM {self._t_keys}"
        self._ledger_select = f"SELECT {', '.join(_sql.LEDGER_COLUMNS)} FROM {self._t_ledger}"
        self._request_log = _requestlog_postgres.PostgresRequestLog(s)
        self._feedback = _feedback_sql.PostgresFeedback(s)
        self._conversations = _conversations_sql.PostgresConversations(s)

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            # asyncpg prepares every statement; a generic plan made while a table was small (a
            # sequential scan) would stay in use as the table grows. Plan each execution instead:
            # these statements plan in microseconds.
            server_settings={"plan_cache_mode": "force_custom_plan", **self.server_settings},
        )
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._start_writer()

    async def aclose(self) -> None:
        if self._pool is None:
            return
        if self._writing:
            await self._stop_writer()
        for lane in list(self._lane_conns):
            await self._release_lane_conn(lane)
        await self._pool.close()
        self._pool = None

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return self._pool

    async def _migrate(self) -> None:
        s = f'"{self.schema}"'
        async with self._require_pool().acquire() as conn, conn.transaction():
            # One migrating process at a time (CREATE ... IF NOT EXISTS alone still races).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"modelyard:{self.schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations "
                "(name text PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            done = {r["name"] for r in await conn.fetch(f"SELECT name FROM {s}.schema_migrations")}
            for name, statements in _migrations(s):
                if name in done:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(f"INSERT INTO {s}.schema_migrations VALUES ($1, $2)", name, time.time())

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRANSIENT)

    def _is_disk_full(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncpg.exceptions.DiskFullError)

    # -- group commit ------------------------------------------------------------------------
    async def _commit(
        self,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
        lane: Lane,
    ) -> CommitResult:
        # A lane's commits are serialised (one writer task each; recovery under its lock): one
        # connection per lane, held, saves the pool's acquire and reset round trips on every batch.
        conn = self._lane_conns.get(lane)
        if conn is None or not _usable(conn):
            await self._release_lane_conn(lane)
            conn = self._lane_conns[lane] = await self._require_pool().acquire()
        try:
            if recover_before is None and self.server_side_commit:
                # Autocommit: the function's statement is the transaction. One round trip.
                result = await conn.fetchrow(
                    self._commit_call, *_pg_function.call_arguments(reserves, settlements, self._clock())
                )
                decisions, settled = _pg_function.decisions(result, len(reserves))
                return CommitResult(decisions, settled)
            async with conn.transaction():
                return await self._commit_work(conn, reserves, settlements, recover_before)
        except BaseException as exc:
            if not isinstance(exc, asyncpg.PostgresError) or not _usable(conn):
                # Lost, or interrupted mid-statement (cancelled): the next commit starts on a fresh
                # connection. A server-side error (a serialization failure, say) keeps this one.
                await self._release_lane_conn(lane)
            raise
        finally:
            if lane == "recover":
                await self._release_lane_conn(lane)

    async def _release_lane_conn(self, lane: Lane) -> None:
        conn = self._lane_conns.pop(lane, None)
        if conn is not None and self._pool is not None:
            try:
                await self._pool.release(conn, timeout=5)
            except Exception:
                conn.terminate()

    async def _commit_work(
        self,
        conn: Any,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
    ) -> CommitResult:
        now = self._clock()
        ids = sorted({s.request_id for s in settlements} | {r.request_id for r in reserves})
        reservations = {}
        if ids:
            rows = await conn.fetch(
                f"{self._res_select} WHERE request_id = ANY($1::text[]) ORDER BY request_id FOR UPDATE", ids
            )
            reservations = {row[0]: _sql.reservation_from_row(tuple(row)) for row in rows}
        if recover_before is not None:
            # SKIP LOCKED: one another process is settling right now is not overdue for long.
            rows = await conn.fetch(
                f"{self._res_select} WHERE status = 'pending' AND deadline_at < $1 "
                "ORDER BY request_id FOR UPDATE SKIP LOCKED",
                recover_before,
            )
            overdue = [_sql.reservation_from_row(tuple(row)) for row in rows]
            reservations.update((row.request_id, row) for row in overdue)
            settlements = settlements + [recovery_settlement(row, now) for row in overdue]
        pending = [
            reservations[s.request_id]
            for s in settlements
            if s.request_id in reservations and reservations[s.request_id].status == "pending"
        ]
        keys: set[BudgetKey] = {key for row in pending for key in row.budgets}
        keys.update(key for r in reserves for key in budget_keys(r.budgets))
        budgets: dict[BudgetKey, list[BudgetRow]] = {}
        if keys:
            ordered = sorted(keys)
            rows = await conn.fetch(
                f"{self._budget_select} WHERE (scope, scope_id) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[])) "
                "ORDER BY scope, scope_id, period FOR UPDATE",
                [k[0] for k in ordered],
                [k[1] for k in ordered],
            )
            for row in rows:
                budgets.setdefault((row[0], row[1]), []).append(BudgetRow(*row))
        existing: set[tuple[str, int]] = set()
        if pending:
            rows = await conn.fetch(
                f"SELECT request_id, attempt FROM {self._t_ledger} WHERE request_id = ANY($1::text[])",
                [row.request_id for row in pending],
            )
            existing = {(row[0], row[1]) for row in rows}
        plan = plan_batch(
            budgets=budgets,
            reservations=reservations,
            existing_attempts=existing,
            settlements=settlements,
            reserves=reserves,
            now=now,
        )
        if _pg_commit.has_writes(plan):
            # Budgets, new reservations, settled ones and ledger rows: one statement, one round trip.
            await conn.execute(self._write_plan, *_pg_commit.plan_arguments(plan, now))
        return CommitResult(plan.decisions, len(plan.settled_ids))

    # -- keys --------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord) -> None:
        values = _sql.key_to_row(record)
        await self._require_pool().execute(
            f"INSERT INTO {self._t_keys} ({', '.join(_sql.KEY_COLUMNS)}) "
            f"VALUES ({_placeholders(len(values))})",
            *values,
        )

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._require_pool().fetchrow(f"{self._key_select} WHERE hash = $1", key_hash)
        return None if row is None else _sql.key_from_row(tuple(row))

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        row = await self._require_pool().fetchrow(f"{self._key_select} WHERE id = $1", key_id)
        return None if row is None else _sql.key_from_row(tuple(row))

    async def list_keys(
        self,
        *,
        team_id: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        include_revoked: bool = False,
    ) -> list[KeyRecord]:
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        for column, value in (("team_id", team_id), ("user_id", user_id), ("org_id", org_id)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        if not include_revoked:
            params.append(time.time())
            where.append(f"(revoked_at IS NULL OR revoked_at > ${len(params)})")
        rows = await self._require_pool().fetch(
            f"{self._key_select} WHERE {' AND '.join(where)} ORDER BY created_at, id", *params
        )
        return [_sql.key_from_row(tuple(row)) for row in rows]

    async def revoke_key(self, key_id: str, at: float) -> bool:
        status = await self._require_pool().execute(
            f"UPDATE {self._t_keys} SET revoked_at = $1 WHERE id = $2", at, key_id
        )
        return str(status) != "UPDATE 0"

    # -- budgets -----------------------------------------------------------------------------
    async def set_budget(self, spec: BudgetSpec) -> None:
        await self._require_pool().execute(
            f"INSERT INTO {self._t_budgets} (scope, scope_id, period, limit_nano, period_start) "
            "VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_nano = excluded.limit_nano",
            str(spec.scope),
            spec.scope_id,
            str(spec.period),
            spec.limit_nano,
            period_start(spec.period, self._clock()),
        )

    async def delete_budget(self, scope: Scope, scope_id: str, period: Period) -> bool:
        status = await self._require_pool().execute(
            f"DELETE FROM {self._t_budgets} WHERE scope = $1 AND scope_id = $2 AND period = $3",
            str(scope),
            scope_id,
            str(period),
        )
        return str(status) != "DELETE 0"

    async def budgets(self, scope: Scope | None = None, scope_id: str | None = None) -> list[BudgetState]:
        rows = await self._require_pool().fetch(
            f"{self._budget_select} WHERE ($1::text IS NULL OR scope = $1) "
            "AND ($2::text IS NULL OR scope_id = $2) ORDER BY scope, scope_id, period",
            None if scope is None else str(scope),
            scope_id,
        )
        return budget_states(rows, self._clock())

    # -- reports -----------------------------------------------------------------------------
    async def spend_report(
        self,
        *,
        group_by: str,
        since: float,
        until: float | None = None,
        filters: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        sql, params = _sql.report_sql(
            table=self._t_ledger,
            group_by=group_by,
            since=since,
            until=until,
            filters=filters,
            placeholder=lambda n: f"${n}",
            tag_source="unnest(l.tags) AS t(value)",
            tag_filter=lambda p: f"{p} = ANY(l.tags)",
        )
        rows = await self._require_pool().fetch(sql, *params)
        return _sql.report_rows([tuple(row) for row in rows])

    async def ledger_rows(
        self, *, since: float | None = None, request_id: str | None = None, limit: int = 100
    ) -> list[AttemptRow]:
        """Rows in (created_at, request_id, attempt) order: the first ``limit`` from ``since``, or
        without ``since`` the latest ``limit``."""
        order = "ASC" if since is not None else "DESC"
        rows = await self._require_pool().fetch(
            f"{self._ledger_select} WHERE ($1::float8 IS NULL OR created_at >= $1) "
            "AND ($2::text IS NULL OR request_id = $2) "
            f"ORDER BY created_at {order}, request_id {order}, attempt {order} LIMIT $3",
            since,
            request_id,
            int(limit),
        )
        result = [_sql.attempt_from_row(tuple(row), _tags_from_array) for row in rows]
        return result if since is not None else result[::-1]

    # -- request log -------------------------------------------------------------------------
    async def write_requests(self, rows: Sequence[RequestRow]) -> int:
        if not rows:
            return 0
        return await self._request_log.write(self._require_pool(), rows)

    async def search_requests(self, query: RequestQuery) -> list[RequestRow]:
        return await self._request_log.search(self._require_pool(), query)

    async def request_by_id(self, request_id: str, visibility: Visibility | None = None) -> RequestRow | None:
        return await self._request_log.by_id(self._require_pool(), request_id, visibility or Visibility())

    async def request_rollup(self, query: RollupQuery) -> list[dict[str, Any]]:
        return await self._request_log.rollup(self._require_pool(), query)

    async def request_latency(self, since: float, until: float, res: int) -> list[tuple[Any, ...]]:
        return await self._request_log.latency(self._require_pool(), since, until, res)

    async def purge_requests(self, before: float) -> int:
        return await self._request_log.purge(self._require_pool(), before)

    # -- conversations -----------------------------------------------------------------------
    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationRecord, list[ConversationItem]] | None:
        return await self._conversations.load(self._require_pool(), conversation_id)

    async def create_conversation(self, record: ConversationRecord) -> ConversationRecord:
        return await self._conversations.create(self._require_pool(), record)

    async def append_conversation(
        self, conversation_id: str, messages: Sequence[JSONDict], options: TurnOptions
    ) -> bool:
        return await self._conversations.append(self._require_pool(), conversation_id, messages, options)

    async def list_conversations(
        self, scope: ConversationScope, *, limit: int = 100, before: float | None = None
    ) -> list[ConversationRecord]:
        return await self._conversations.list_for(self._require_pool(), scope, limit, before)

    async def delete_conversation(self, conversation_id: str) -> bool:
        return await self._conversations.delete(self._require_pool(), conversation_id)

    async def purge_conversations(self, before: float) -> int:
        return await self._conversations.purge(self._require_pool(), before)

    async def put_response(self, response: StoredResponse) -> None:
        await self._conversations.put_response(self._require_pool(), response)

    async def response_chain(self, response_id: str, max_depth: int) -> list[StoredResponse]:
        return await self._conversations.chain(self._require_pool(), response_id, max_depth)

    async def delete_response(self, response_id: str) -> bool:
        return await self._conversations.delete_response(self._require_pool(), response_id)

    # -- smart routing: decisions and feedback -------------------------------------------------
    async def write_route_decisions(self, rows: Sequence[DecisionRow]) -> int:
        if not rows:
            return 0
        return await self._feedback.write_decisions(self._require_pool(), rows)

    async def route_decision(self, request_id: str) -> DecisionRow | None:
        return await self._feedback.decision(self._require_pool(), request_id)

    async def put_feedback(self, row: FeedbackRow) -> None:
        await self._feedback.put_feedback(self._require_pool(), row)

    async def feedback(
        self, *, request_id: str | None = None, since: float = 0.0, limit: int = 100_000
    ) -> list[FeedbackRow]:
        return await self._feedback.feedback(self._require_pool(), request_id, since, limit)

    async def purge_route_decisions(self, before: float) -> int:
        return await self._feedback.purge_decisions(self._require_pool(), before)
