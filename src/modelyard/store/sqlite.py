"""The SQLite store: one file, shared safely by several gateway processes.

* **Threads.** sqlite3 blocks, so the event loop never calls it: one writer thread owns the
  writing connection (every write, batched by :class:`BatchingStore`), one reader thread owns a
  reading connection (WAL readers never wait for the writer). Each is a plain thread fed by a queue
  (:mod:`modelyard.store._thread`), and a batch goes in as one statement per table however many rows
  it has (:mod:`modelyard.store._sqlite_bulk`): the writer takes the GIL back after every statement
  step, and a busy event loop gives it up only every 5 ms.
* **Transactions.** Every write is ``BEGIN IMMEDIATE`` … ``COMMIT``: the file's write lock is taken
  before anything is read, so a reservation's check and its update see no other process's write in
  between. ``busy_timeout`` makes a blocked process wait for the lock; a commit that still fails with
  SQLITE_BUSY is retried (group commit: the batch stays queued), never shown to a caller.
* **Durability.** WAL with ``synchronous=FULL`` (the default): a commit fsyncs the WAL, so an
  acknowledged reservation or flushed settlement survives a power cut as well as ``kill -9``. Group
  commit is what makes this affordable: one fsync (about 2 ms here) is shared by a whole batch.
  ``synchronous="normal"`` (``storage.sqlite_synchronous``) skips the fsync: commits still survive
  ``kill -9`` (WAL), but the last ones can be lost to a power cut or an OS crash.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Literal, TypeVar

from modelyard.conversations.model import (
    ConversationItem,
    ConversationRecord,
    ConversationScope,
    JSONDict,
    StoredResponse,
    TurnOptions,
)
from modelyard.store import _conversations_sql, _feedback_sql, _requestlog_sql, _requestlog_sqlite, _sql
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
from modelyard.store._sqlite_bulk import bulk_sql, run_bulk
from modelyard.store._thread import StoreThread
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

__all__ = ["MIN_SQLITE", "SqliteStore"]

MIN_SQLITE = (3, 35, 0)
"""The oldest SQLite library the store runs on (RETURNING: 3.35; UPDATE … FROM: 3.33)."""

T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "0001_initial",
        (
            """CREATE TABLE keys (
                id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, hint TEXT NOT NULL, role TEXT NOT NULL,
                name TEXT, org_id TEXT, team_id TEXT, user_id TEXT, tags TEXT NOT NULL, models TEXT,
                max_tokens INTEGER, rpm INTEGER, tpm INTEGER, expires_at REAL, revoked_at REAL,
                created_at REAL NOT NULL, created_by TEXT, store_prompts INTEGER NOT NULL,
                metadata TEXT NOT NULL)""",
            "CREATE INDEX keys_team ON keys (team_id)",
            "CREATE INDEX keys_user ON keys (user_id)",
            "CREATE INDEX keys_org ON keys (org_id)",
            """CREATE TABLE budgets (
                scope TEXT NOT NULL, scope_id TEXT NOT NULL, period TEXT NOT NULL,
                limit_nano INTEGER NOT NULL, spend_nano INTEGER NOT NULL DEFAULT 0,
                reserved_nano INTEGER NOT NULL DEFAULT 0, period_start REAL NOT NULL,
                PRIMARY KEY (scope, scope_id, period))""",
            """CREATE TABLE reservations (
                request_id TEXT PRIMARY KEY,
                status TEXT NOT NULL CHECK (status IN ('pending', 'settled')),
                max_cost_nano INTEGER NOT NULL, budgets TEXT NOT NULL, key_id TEXT, team_id TEXT,
                user_id TEXT, org_id TEXT, tags TEXT NOT NULL, model TEXT NOT NULL,
                created_at REAL NOT NULL, deadline_at REAL NOT NULL, settled_at REAL)""",
            "CREATE INDEX reservations_pending ON reservations (deadline_at) WHERE status = 'pending'",
            """CREATE TABLE ledger (
                request_id TEXT NOT NULL, attempt INTEGER NOT NULL, key_id TEXT, team_id TEXT,
                user_id TEXT, org_id TEXT, tags TEXT NOT NULL, model_requested TEXT NOT NULL,
                deployment TEXT NOT NULL, route_reason TEXT NOT NULL, local INTEGER NOT NULL,
                tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
                tokens_cache_read INTEGER NOT NULL, tokens_cache_write INTEGER NOT NULL,
                cost_nano INTEGER NOT NULL, status TEXT NOT NULL, http_status INTEGER,
                latency_ms REAL NOT NULL, ttft_ms REAL, created_at REAL NOT NULL,
                PRIMARY KEY (request_id, attempt))""",
            "CREATE INDEX ledger_created ON ledger (created_at)",
            "CREATE INDEX ledger_key ON ledger (key_id, created_at)",
            "CREATE INDEX ledger_team ON ledger (team_id, created_at)",
            "CREATE INDEX ledger_model ON ledger (model_requested, created_at)",
            "CREATE INDEX ledger_deployment ON ledger (deployment, created_at)",
        ),
    ),
    _requestlog_sqlite.MIGRATION,
    _conversations_sql.SQLITE_MIGRATION,
    _feedback_sql.SQLITE_MIGRATION,
)

_LEDGER_INSERT = (
    f"INSERT INTO ledger ({', '.join(_sql.LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_sql.LEDGER_COLUMNS))}) ON CONFLICT DO NOTHING"
)
_RESERVATION_INSERT = (
    f"INSERT INTO reservations ({', '.join(_sql.RESERVATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_sql.RESERVATION_COLUMNS))}) ON CONFLICT DO NOTHING"
)
_LEDGER_BULK = bulk_sql(_LEDGER_INSERT, len(_sql.LEDGER_COLUMNS))
_RESERVATION_BULK = bulk_sql(_RESERVATION_INSERT, len(_sql.RESERVATION_COLUMNS))
_SETTLED_BULK = (
    "UPDATE reservations SET status = 'settled', settled_at = ? "
    "WHERE request_id IN (SELECT value FROM json_each(?))"
)
_BUDGETS_BULK = (
    "UPDATE budgets SET spend_nano = json_extract(u.value, '$[0]'), "
    "reserved_nano = json_extract(u.value, '$[1]'), period_start = json_extract(u.value, '$[2]') "
    "FROM json_each(?) AS u WHERE budgets.scope = json_extract(u.value, '$[3]') "
    "AND budgets.scope_id = json_extract(u.value, '$[4]') AND budgets.period = json_extract(u.value, '$[5]')"
)
_RESERVATION_SELECT = f"SELECT {', '.join(_sql.RESERVATION_COLUMNS)} FROM reservations"
_BUDGET_SELECT = (
    "SELECT scope, scope_id, period, limit_nano, spend_nano, reserved_nano, period_start FROM budgets"
)
_KEY_SELECT = f"SELECT {', '.join(_sql.KEY_COLUMNS)} FROM keys"
_LEDGER_SELECT = f"SELECT {', '.join(_sql.LEDGER_COLUMNS)} FROM ledger"


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _attempt_row(row: tuple[Any, ...]) -> AttemptRow:
    return _sql.attempt_from_row(row, _sql.tags_from_json)


class SqliteStore(BatchingStore):
    """A :class:`~modelyard.store.base.Store` in one SQLite file (WAL, ``synchronous=FULL``).

    ``busy_timeout_ms`` (default 5000): how long a statement waits for another process's write
    lock before SQLite reports it busy (then the batch is retried; callers never see it).
    ``clock`` (default ``time.time``): the time used for budget periods (tests move it).
    """

    concurrent_commits = False  # one writing connection: one writer commits everything together

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
        max_queued_settlements: int = 100_000,
        max_batch: int = 500,
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        super().__init__(max_queued_settlements=max_queued_settlements, max_batch=max_batch, clock=clock)
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.synchronous = synchronous
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer_thread: StoreThread | None = None
        self._reader_thread: StoreThread | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        self._writer_thread = StoreThread("sqlite-writer")
        self._reader_thread = StoreThread("sqlite-reader")
        self._wconn = await self._in_writer(self._connect, True)
        self._rconn = await self._in_reader(self._connect, False)
        self._start_writer()

    async def aclose(self) -> None:
        if self._writer_thread is None or self._reader_thread is None:
            return
        if self._writing:
            await self._stop_writer()
        for thread, conn in ((self._writer_thread, self._wconn), (self._reader_thread, self._rconn)):
            if conn is not None:
                await thread.run(conn.close)
            await thread.stop()
        self._writer_thread = self._reader_thread = None
        self._wconn = self._rconn = None

    def _connect(self, migrate: bool) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old for the modelyard store: it needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer. Use a Python built against a newer "
                "libsqlite3 (Debian 12, Ubuntu 22.04 and later ship one), or "
                "set storage.database to a PostgreSQL URL"
            )
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if migrate:
                self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute(
                "PRAGMA synchronous = FULL" if self.synchronous == "full" else "PRAGMA synchronous = NORMAL"
            )
            if migrate:
                self._retry_busy(lambda: self._transaction(conn, self._migrate))
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {name for (name,) in conn.execute("SELECT name FROM schema_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))

    # -- threads and transactions ------------------------------------------------------------
    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer_thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return await self._writer_thread.run(partial(fn, *args))

    async def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader_thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return await self._reader_thread.run(partial(fn, *args))

    def _retry_busy(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (in a store thread), retrying while the database stays busy: the busy_timeout
        already waited; a second chance costs nothing and keeps "database is locked" from callers."""
        deadline = time.monotonic() + max(30.0, 3 * self.busy_timeout_ms / 1000)
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            # A store thread, not the event loop: sleeping here blocks no one else.
            time.sleep(delay)  # noqa: TID251
            delay = min(delay * 2, 0.2)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            assert self._wconn is not None
            conn = self._wconn
            return self._retry_busy(lambda: self._transaction(conn, work))

        return run

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            assert self._rconn is not None
            conn = self._rconn
            return self._retry_busy(lambda: work(conn))

        return run

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def _is_disk_full(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()

    # -- group commit ------------------------------------------------------------------------
    async def _commit(
        self,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
        lane: Lane,
    ) -> CommitResult:
        work = partial(self._commit_work, reserves, settlements, recover_before)
        assert self._wconn is not None
        return await self._in_writer(self._transaction, self._wconn, work)

    def _commit_work(
        self,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
        conn: sqlite3.Connection,
    ) -> CommitResult:
        now = self._clock()
        ids = [s.request_id for s in settlements] + [r.request_id for r in reserves]
        reservations = {
            row[0]: _sql.reservation_from_row(row)
            for row in conn.execute(
                f"{_RESERVATION_SELECT} WHERE request_id IN (SELECT value FROM json_each(?))",
                (_sql.dumps(ids),),
            )
        }
        if recover_before is not None:
            overdue = [
                _sql.reservation_from_row(row)
                for row in conn.execute(
                    f"{_RESERVATION_SELECT} WHERE status = 'pending' AND deadline_at < ?", (recover_before,)
                )
            ]
            reservations.update((row.request_id, row) for row in overdue)
            settlements = settlements + [recovery_settlement(row, now) for row in overdue]
        pending = [
            reservations[s.request_id]
            for s in settlements
            if s.request_id in reservations and reservations[s.request_id].status == "pending"
        ]
        keys: set[BudgetKey] = {key for row in pending for key in row.budgets}
        keys.update(key for r in reserves for key in budget_keys(r.budgets))
        budgets = self._load_budgets(conn, keys)
        existing: set[tuple[str, int]] = set()
        if pending:
            existing = {
                (request_id, attempt)
                for request_id, attempt in conn.execute(
                    "SELECT request_id, attempt FROM ledger WHERE request_id IN "
                    "(SELECT value FROM json_each(?))",
                    (_sql.dumps([row.request_id for row in pending]),),
                )
            }
        plan = plan_batch(
            budgets=budgets,
            reservations=reservations,
            existing_attempts=existing,
            settlements=settlements,
            reserves=reserves,
            now=now,
        )
        # One statement each, whatever the batch size (see _sqlite_bulk: a row each would wait for
        # the GIL a row each while the event loop is busy).
        run_bulk(
            conn,
            _BUDGETS_BULK,
            [
                (b.spend_nano, b.reserved_nano, b.period_start, b.scope, b.scope_id, b.period)
                for b in plan.dirty_budgets
            ],
        )
        run_bulk(conn, _RESERVATION_BULK, [_sql.reservation_to_row(r) for r in plan.new_reservations])
        if plan.settled_ids:
            conn.execute(_SETTLED_BULK, (now, _sql.dumps(list(plan.settled_ids))))
        run_bulk(
            conn, _LEDGER_BULK, [_sql.attempt_to_row(row, _sql.tags_to_json) for row in plan.ledger_rows]
        )
        return CommitResult(plan.decisions, len(plan.settled_ids))

    @staticmethod
    def _load_budgets(
        conn: sqlite3.Connection, wanted: Iterable[BudgetKey]
    ) -> dict[BudgetKey, list[BudgetRow]]:
        budgets: dict[BudgetKey, list[BudgetRow]] = {}
        keys = sorted(wanted)
        if not keys:
            return budgets
        rows = conn.execute(
            f"{_BUDGET_SELECT} WHERE (scope, scope_id) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
            (_sql.dumps(keys),),
        )
        for row in rows:
            budgets.setdefault((row[0], row[1]), []).append(BudgetRow(*row))
        return budgets

    # -- keys --------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord) -> None:
        values = _sql.key_to_row(record)
        sql = f"INSERT INTO keys ({', '.join(_sql.KEY_COLUMNS)}) VALUES ({', '.join('?' * len(values))})"
        await self._in_writer(self._write(lambda conn: conn.execute(sql, values)))

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._one_key(f"{_KEY_SELECT} WHERE hash = ?", key_hash)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        return await self._one_key(f"{_KEY_SELECT} WHERE id = ?", key_id)

    async def _one_key(self, sql: str, value: str) -> KeyRecord | None:
        row = await self._in_reader(self._read(lambda conn: conn.execute(sql, (value,)).fetchone()))
        return None if row is None else _sql.key_from_row(row)

    async def list_keys(
        self,
        *,
        team_id: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        include_revoked: bool = False,
    ) -> list[KeyRecord]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("team_id", team_id), ("user_id", user_id), ("org_id", org_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if not include_revoked:
            where.append("(revoked_at IS NULL OR revoked_at > ?)")
            params.append(time.time())
        sql = f"{_KEY_SELECT} WHERE {' AND '.join(where)} ORDER BY created_at, id"
        rows = await self._in_reader(self._read(lambda conn: conn.execute(sql, params).fetchall()))
        return [_sql.key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, at: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE keys SET revoked_at = ? WHERE id = ?", (at, key_id)).rowcount > 0

        return await self._in_writer(self._write(work))

    # -- budgets -----------------------------------------------------------------------------
    async def set_budget(self, spec: BudgetSpec) -> None:
        start = period_start(spec.period, self._clock())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO budgets (scope, scope_id, period, limit_nano, period_start) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_nano = excluded.limit_nano",
                (str(spec.scope), spec.scope_id, str(spec.period), spec.limit_nano, start),
            )

        await self._in_writer(self._write(work))

    async def delete_budget(self, scope: Scope, scope_id: str, period: Period) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM budgets WHERE scope = ? AND scope_id = ? AND period = ?",
                (str(scope), scope_id, str(period)),
            )
            return cursor.rowcount > 0

        return await self._in_writer(self._write(work))

    async def budgets(self, scope: Scope | None = None, scope_id: str | None = None) -> list[BudgetState]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if scope is not None:
            where.append("scope = ?")
            params.append(str(scope))
        if scope_id is not None:
            where.append("scope_id = ?")
            params.append(scope_id)
        sql = f"{_BUDGET_SELECT} WHERE {' AND '.join(where)} ORDER BY scope, scope_id, period"
        rows = await self._in_reader(self._read(lambda conn: conn.execute(sql, params).fetchall()))
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
            table="ledger",
            group_by=group_by,
            since=since,
            until=until,
            filters=filters,
            placeholder=lambda _: "?",
            tag_source="json_each(l.tags) AS t",
            tag_filter=lambda p: f"EXISTS (SELECT 1 FROM json_each(l.tags) WHERE value = {p})",
        )
        rows = await self._in_reader(self._read(lambda conn: conn.execute(sql, params).fetchall()))
        return _sql.report_rows(rows)

    async def ledger_rows(
        self, *, since: float | None = None, request_id: str | None = None, limit: int = 100
    ) -> list[AttemptRow]:
        """Rows in (created_at, request_id, attempt) order: the first ``limit`` from ``since``, or
        without ``since`` the latest ``limit``."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        order = "ASC" if since is not None else "DESC"
        sql = (
            f"{_LEDGER_SELECT} WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, request_id {order}, attempt {order} LIMIT ?"
        )
        params.append(int(limit))
        rows = await self._in_reader(self._read(lambda conn: conn.execute(sql, params).fetchall()))
        result = [_attempt_row(row) for row in rows]
        return result if since is not None else result[::-1]

    # -- request log -------------------------------------------------------------------------
    async def write_requests(self, rows: Sequence[RequestRow]) -> int:
        if not rows:
            return 0
        return await self._in_writer(self._write(partial(_requestlog_sqlite.write, rows)))

    async def search_requests(self, query: RequestQuery) -> list[RequestRow]:
        return await self._in_reader(self._read(partial(_requestlog_sqlite.search, query)))

    async def request_by_id(self, request_id: str, visibility: Visibility | None = None) -> RequestRow | None:
        work = partial(_requestlog_sqlite.by_id, request_id, visibility or Visibility())
        return await self._in_reader(self._read(work))

    async def request_rollup(self, query: RollupQuery) -> list[dict[str, Any]]:
        return await self._in_reader(self._read(partial(_requestlog_sqlite.rollup, query)))

    async def request_latency(self, since: float, until: float, res: int) -> list[tuple[Any, ...]]:
        return await self._in_reader(self._read(partial(_requestlog_sqlite.latency, since, until, res)))

    async def purge_requests(self, before: float) -> int:
        total = 0
        while True:
            # One short transaction per chunk: the writer lock is never held for long.
            deleted = await self._in_writer(self._write(partial(_requestlog_sqlite.purge_chunk, before)))
            total += deleted
            if deleted < _requestlog_sql.PURGE_CHUNK:
                return total

    # -- conversations -----------------------------------------------------------------------
    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationRecord, list[ConversationItem]] | None:
        return await self._in_reader(self._read(partial(_conversations_sql.sqlite_load, conversation_id)))

    async def create_conversation(self, record: ConversationRecord) -> ConversationRecord:
        return await self._in_writer(self._write(partial(_conversations_sql.sqlite_create, record)))

    async def append_conversation(
        self, conversation_id: str, messages: Sequence[JSONDict], options: TurnOptions
    ) -> bool:
        work = partial(_conversations_sql.sqlite_append, conversation_id, messages, options)
        return await self._in_writer(self._write(work))

    async def list_conversations(
        self, scope: ConversationScope, *, limit: int = 100, before: float | None = None
    ) -> list[ConversationRecord]:
        work = partial(_conversations_sql.sqlite_list, scope, limit, before)
        return await self._in_reader(self._read(work))

    async def delete_conversation(self, conversation_id: str) -> bool:
        return await self._in_writer(self._write(partial(_conversations_sql.sqlite_delete, conversation_id)))

    async def purge_conversations(self, before: float) -> int:
        total = 0
        while True:  # one short transaction per chunk
            work = partial(_conversations_sql.sqlite_purge_chunk, before)
            deleted = await self._in_writer(self._write(work))
            total += deleted
            if deleted == 0:
                return total

    async def put_response(self, response: StoredResponse) -> None:
        await self._in_writer(self._write(partial(_conversations_sql.sqlite_put_response, response)))

    async def response_chain(self, response_id: str, max_depth: int) -> list[StoredResponse]:
        work = partial(_conversations_sql.sqlite_chain, response_id, max_depth)
        return await self._in_reader(self._read(work))

    async def delete_response(self, response_id: str) -> bool:
        work = partial(_conversations_sql.sqlite_delete_response, response_id)
        return await self._in_writer(self._write(work))

    # -- smart routing: decisions and feedback -------------------------------------------------
    async def write_route_decisions(self, rows: Sequence[DecisionRow]) -> int:
        if not rows:
            return 0
        return await self._in_writer(self._write(partial(_feedback_sql.sqlite_write_decisions, rows)))

    async def route_decision(self, request_id: str) -> DecisionRow | None:
        return await self._in_reader(self._read(partial(_feedback_sql.sqlite_decision, request_id)))

    async def put_feedback(self, row: FeedbackRow) -> None:
        await self._in_writer(self._write(partial(_feedback_sql.sqlite_put_feedback, row)))

    async def feedback(
        self, *, request_id: str | None = None, since: float = 0.0, limit: int = 100_000
    ) -> list[FeedbackRow]:
        work = partial(_feedback_sql.sqlite_feedback, request_id, since, limit)
        return await self._in_reader(self._read(work))

    async def purge_route_decisions(self, before: float) -> int:
        return await self._in_writer(self._write(partial(_feedback_sql.sqlite_purge_decisions, before)))
