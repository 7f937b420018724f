"""Conversation and stored-response SQL shared by the SQLite and PostgreSQL stores.

Migration ``0004_conversations`` adds three tables:

* ``conversations`` — one row per conversation: its owner (key, team, user, org), how many turns
  it holds and its latest system prompt;
* ``conversation_items`` — its messages in the protocol-neutral form (JSON text), numbered by
  ``seq`` and grouped by ``turn``;
* ``stored_responses`` — ``/v1/responses`` answers, linked by ``previous_response_id``.

Values reach SQL only as bound parameters; what is interpolated is table names (a validated,
quoted schema prefix) and fixed clauses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from modelyard.conversations.model import (
    ConversationItem,
    ConversationRecord,
    ConversationScope,
    JSONDict,
    Owner,
    StoredResponse,
    TurnOptions,
)

MIGRATION_NAME = "0004_conversations"
CONVERSATION_COLUMNS = (
    "id",
    "key_id",
    "team_id",
    "user_id",
    "org_id",
    "created_at",
    "updated_at",
    "turns",
    "system_prompt",
)
RESPONSE_COLUMNS = (
    "id",
    "key_id",
    "team_id",
    "user_id",
    "org_id",
    "created_at",
    "previous_response_id",
    "model",
    "messages",
    "response",
    "input_items",
)
Placeholder = Callable[[int], str]
PURGE_CHUNK = 1000


def migration(s: str, real: str, integer: str) -> tuple[str, ...]:
    """The statements of migration 0004; ``s`` prefixes table names (``""`` or ``"schema".``)."""
    return (
        f"""CREATE TABLE {s}conversations (
            id text PRIMARY KEY, key_id text, team_id text, user_id text, org_id text,
            created_at {real} NOT NULL, updated_at {real} NOT NULL, turns {integer} NOT NULL,
            system_prompt text)""",
        f"CREATE INDEX conversations_updated ON {s}conversations (updated_at)",
        f"CREATE INDEX conversations_key ON {s}conversations (key_id, updated_at)",
        f"CREATE INDEX conversations_team ON {s}conversations (team_id, updated_at)",
        f"""CREATE TABLE {s}conversation_items (
            conversation_id text NOT NULL, seq {integer} NOT NULL, turn {integer} NOT NULL,
            message text NOT NULL, created_at {real} NOT NULL,
            PRIMARY KEY (conversation_id, seq))""",
        f"""CREATE TABLE {s}stored_responses (
            id text PRIMARY KEY, key_id text, team_id text, user_id text, org_id text,
            created_at {real} NOT NULL, previous_response_id text, model text NOT NULL,
            messages text NOT NULL, response text NOT NULL, input_items text NOT NULL)""",
        f"CREATE INDEX stored_responses_created ON {s}stored_responses (created_at)",
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def conversation_from_row(row: Sequence[Any]) -> ConversationRecord:
    return ConversationRecord(
        id=row[0],
        owner=Owner(row[1], row[2], row[3], row[4]),
        created_at=float(row[5]),
        updated_at=float(row[6]),
        turns=int(row[7]),
        system=row[8],
    )


def conversation_to_row(record: ConversationRecord) -> tuple[Any, ...]:
    o = record.owner
    return (
        record.id,
        o.key_id,
        o.team_id,
        o.user_id,
        o.org_id,
        record.created_at,
        record.updated_at,
        record.turns,
        record.system,
    )


def response_from_row(row: Sequence[Any]) -> StoredResponse:
    return StoredResponse(
        id=row[0],
        owner=Owner(row[1], row[2], row[3], row[4]),
        created_at=float(row[5]),
        previous_response_id=row[6],
        model=row[7],
        messages=orjson.loads(row[8]),
        response=orjson.loads(row[9]),
        input_items=orjson.loads(row[10]),
    )


def response_to_row(response: StoredResponse) -> tuple[Any, ...]:
    o = response.owner
    return (
        response.id,
        o.key_id,
        o.team_id,
        o.user_id,
        o.org_id,
        response.created_at,
        response.previous_response_id,
        response.model,
        _dumps(response.messages),
        _dumps(response.response),
        _dumps(response.input_items),
    )


class Statements:
    """Every statement, for tables prefixed by ``s`` and the backend's placeholder style."""

    def __init__(self, s: str, p: Placeholder) -> None:
        self.p = p
        self.t_conv, self.t_items, self.t_resp = (
            f"{s}conversations",
            f"{s}conversation_items",
            f"{s}stored_responses",
        )
        conv_cols, resp_cols = ", ".join(CONVERSATION_COLUMNS), ", ".join(RESPONSE_COLUMNS)
        self.select_conv = f"SELECT {conv_cols} FROM {self.t_conv} WHERE id = {p(1)}"
        # The conversation and its messages in one statement: one round trip, one snapshot.
        self.load = (
            f"SELECT {', '.join('c.' + col for col in CONVERSATION_COLUMNS)}, "
            f"i.seq, i.turn, i.message, i.created_at FROM {self.t_conv} c "
            f"LEFT JOIN {self.t_items} i ON i.conversation_id = c.id WHERE c.id = {p(1)} ORDER BY i.seq"
        )
        self.insert_conv = (
            f"INSERT INTO {self.t_conv} ({conv_cols}) "
            f"VALUES ({', '.join(p(i + 1) for i in range(len(CONVERSATION_COLUMNS)))}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self.max_seq = f"SELECT COALESCE(MAX(seq), 0) FROM {self.t_items} WHERE conversation_id = {p(1)}"
        self.insert_item = (
            f"INSERT INTO {self.t_items} (conversation_id, seq, turn, message, created_at) "
            f"VALUES ({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)})"
        )
        self.update_conv = (
            f"UPDATE {self.t_conv} SET turns = {p(1)}, updated_at = {p(2)}, "
            f"system_prompt = COALESCE({p(3)}, system_prompt) WHERE id = {p(4)}"
        )
        self.trim_items = f"DELETE FROM {self.t_items} WHERE conversation_id = {p(1)} AND turn <= {p(2)}"
        self.delete_items = f"DELETE FROM {self.t_items} WHERE conversation_id = {p(1)}"
        self.delete_conv = f"DELETE FROM {self.t_conv} WHERE id = {p(1)}"
        # The purge works in chunks of PURGE_CHUNK conversations (or responses) per transaction,
        # so the write lock is never held for long. The age is checked again on the row itself: a
        # conversation continued meanwhile is kept (PostgreSQL re-checks it after a row lock).
        old_convs_select = (
            f"SELECT id FROM {self.t_conv} WHERE updated_at < {p(1)} ORDER BY updated_at LIMIT {PURGE_CHUNK}"
        )
        self.purge_convs = (
            f"DELETE FROM {self.t_conv} WHERE id IN ({old_convs_select}) AND updated_at < {p(1)} RETURNING id"
        )
        old_responses_select = (
            f"SELECT id FROM {self.t_resp} WHERE created_at < {p(1)} ORDER BY created_at LIMIT {PURGE_CHUNK}"
        )
        self.purge_responses = f"DELETE FROM {self.t_resp} WHERE id IN ({old_responses_select})"
        self.insert_response = (
            f"INSERT INTO {self.t_resp} ({resp_cols}) "
            f"VALUES ({', '.join(p(i + 1) for i in range(len(RESPONSE_COLUMNS)))}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self.delete_response = f"DELETE FROM {self.t_resp} WHERE id = {p(1)}"
        # The chain ending at a response, newest first, at most p(2) links (a deleted or purged
        # link ends it there).
        self.chain = (
            f"WITH RECURSIVE chain(id, prev, depth) AS ("
            f"SELECT id, previous_response_id, 0 FROM {self.t_resp} WHERE id = {p(1)} "
            f"UNION ALL SELECT r.id, r.previous_response_id, c.depth + 1 FROM {self.t_resp} r "
            f"JOIN chain c ON r.id = c.prev WHERE c.depth + 1 < {p(2)}) "
            f"SELECT {', '.join('r.' + c for c in RESPONSE_COLUMNS)} FROM {self.t_resp} r "
            "JOIN chain c ON r.id = c.id ORDER BY c.depth"
        )

    def list_conversations(
        self, scope: ConversationScope, limit: int, before: float | None
    ) -> tuple[str, list[Any]]:
        """Newest first; ``before``: only those last updated before it (the next page)."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return self.p(len(params))

        if scope.key_ids is not None:
            if not scope.key_ids:
                return f"SELECT {', '.join(CONVERSATION_COLUMNS)} FROM {self.t_conv} WHERE 1 = 0", []
            where.append(f"key_id IN ({', '.join(param(k) for k in scope.key_ids)})")
        for column, value in (
            ("team_id", scope.team_id),
            ("user_id", scope.user_id),
            ("org_id", scope.org_id),
        ):
            if value is not None:
                where.append(f"{column} = {param(value)}")
        if before is not None:
            where.append(f"updated_at < {param(before)}")
        sql = (
            f"SELECT {', '.join(CONVERSATION_COLUMNS)} FROM {self.t_conv} WHERE {' AND '.join(where)} "
            f"ORDER BY updated_at DESC, id LIMIT {param(int(limit))}"
        )
        return sql, params


def _loaded(rows: Sequence[Sequence[Any]]) -> tuple[ConversationRecord, list[ConversationItem]] | None:
    if not rows:
        return None
    n = len(CONVERSATION_COLUMNS)
    items = [
        ConversationItem(int(r[n]), int(r[n + 1]), orjson.loads(r[n + 2]), float(r[n + 3]))
        for r in rows
        if r[n] is not None
    ]
    return conversation_from_row(rows[0][:n]), items


def _item_rows(
    conversation_id: str, first_seq: int, turn: int, messages: Sequence[JSONDict], now: float
) -> list[tuple[Any, ...]]:
    return [
        (conversation_id, first_seq + i, turn, _dumps(message), now) for i, message in enumerate(messages)
    ]


# -- SQLite: work run on the store's writer or reader thread --------------------------------------
SQLITE = Statements("", lambda _: "?")
SQLITE_MIGRATION = (MIGRATION_NAME, migration("", "REAL", "INTEGER"))


def sqlite_load(
    conversation_id: str, conn: sqlite3.Connection
) -> tuple[ConversationRecord, list[ConversationItem]] | None:
    return _loaded(conn.execute(SQLITE.load, (conversation_id,)).fetchall())


def sqlite_create(record: ConversationRecord, conn: sqlite3.Connection) -> ConversationRecord:
    conn.execute(SQLITE.insert_conv, conversation_to_row(record))
    return conversation_from_row(conn.execute(SQLITE.select_conv, (record.id,)).fetchone())


def sqlite_append(
    conversation_id: str,
    messages: Sequence[JSONDict],
    turn_options: TurnOptions,
    conn: sqlite3.Connection,
) -> bool:
    o = turn_options
    if o.create_for is not None:
        conn.execute(
            SQLITE.insert_conv,
            conversation_to_row(ConversationRecord(conversation_id, o.create_for, o.now, o.now)),
        )
    row = conn.execute(SQLITE.select_conv, (conversation_id,)).fetchone()
    if row is None:
        return False  # deleted meanwhile
    record = conversation_from_row(row)
    if o.scope is not None and not o.scope.allows(record.owner):
        return False  # someone else took the id meanwhile
    turn = record.turns + 1
    (last,) = conn.execute(SQLITE.max_seq, (conversation_id,)).fetchone()
    conn.executemany(SQLITE.insert_item, _item_rows(conversation_id, int(last) + 1, turn, messages, o.now))
    conn.execute(SQLITE.update_conv, (turn, o.now, o.system, conversation_id))
    conn.execute(SQLITE.trim_items, (conversation_id, turn - o.max_turns))
    return True


def sqlite_list(
    scope: ConversationScope, limit: int, before: float | None, conn: sqlite3.Connection
) -> list[ConversationRecord]:
    sql, params = SQLITE.list_conversations(scope, limit, before)
    return [conversation_from_row(row) for row in conn.execute(sql, params)]


def sqlite_delete(conversation_id: str, conn: sqlite3.Connection) -> bool:
    conn.execute(SQLITE.delete_items, (conversation_id,))
    return conn.execute(SQLITE.delete_conv, (conversation_id,)).rowcount > 0


def sqlite_purge_chunk(before: float, conn: sqlite3.Connection) -> int:
    """One chunk of the purge: old conversations (then their items) and old stored responses."""
    ids = [row[0] for row in conn.execute(SQLITE.purge_convs, (before, before)).fetchall()]
    if ids:
        conn.execute(
            f"DELETE FROM {SQLITE.t_items} WHERE conversation_id IN (SELECT value FROM json_each(?))",
            (_dumps(ids),),
        )
    return len(ids) + int(conn.execute(SQLITE.purge_responses, (before,)).rowcount)


def sqlite_put_response(response: StoredResponse, conn: sqlite3.Connection) -> None:
    conn.execute(SQLITE.insert_response, response_to_row(response))


def sqlite_chain(response_id: str, max_depth: int, conn: sqlite3.Connection) -> list[StoredResponse]:
    return [response_from_row(row) for row in conn.execute(SQLITE.chain, (response_id, max_depth))]


def sqlite_delete_response(response_id: str, conn: sqlite3.Connection) -> bool:
    return conn.execute(SQLITE.delete_response, (response_id,)).rowcount > 0


# -- PostgreSQL ----------------------------------------------------------------------------------
def _count(status: str) -> int:
    tail = str(status).rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresConversations:
    """The conversation statements of one schema (already validated and quoted)."""

    def __init__(self, schema: str) -> None:
        self.sql = sql = Statements(f"{schema}.", lambda n: f"${n}")
        # History, not money: an append does not wait for a WAL flush (a PostgreSQL crash may lose
        # the last fraction of a second of turns, never corrupt them). The row lock orders
        # concurrent appends to one conversation.
        self._lock_sql = (
            f"SELECT {', '.join('c.' + c for c in CONVERSATION_COLUMNS)}, "
            "set_config('synchronous_commit', 'off', true) "
            f"FROM {sql.t_conv} c WHERE c.id = $1 FOR UPDATE OF c"
        )
        self._write_sql = (
            f"WITH added AS (INSERT INTO {sql.t_items} (conversation_id, seq, turn, message, created_at) "
            # Read after the lock was taken (a new snapshot), so it sees the previous append.
            "SELECT $1, last.seq + t.n, $3, t.m, $4 FROM unnest($2::text[]) WITH ORDINALITY AS t(m, n), "
            f"(SELECT COALESCE(MAX(seq), 0) AS seq FROM {sql.t_items} WHERE conversation_id = $1) AS last), "
            f"trimmed AS (DELETE FROM {sql.t_items} WHERE conversation_id = $1 AND turn <= $6) "
            f"UPDATE {sql.t_conv} SET turns = $3, updated_at = $4, "
            "system_prompt = COALESCE($5::text, system_prompt) WHERE id = $1"
        )

    @staticmethod
    def migration(schema: str) -> tuple[str, tuple[str, ...]]:
        return MIGRATION_NAME, migration(f"{schema}.", "double precision", "bigint")

    async def load(
        self, pool: asyncpg.Pool, conversation_id: str
    ) -> tuple[ConversationRecord, list[ConversationItem]] | None:
        rows = await pool.fetch(self.sql.load, conversation_id)
        return _loaded([tuple(row) for row in rows])

    async def create(self, pool: asyncpg.Pool, record: ConversationRecord) -> ConversationRecord:
        async with pool.acquire() as conn:
            await conn.execute(self.sql.insert_conv, *conversation_to_row(record))
            row = await conn.fetchrow(self.sql.select_conv, record.id)
        assert row is not None  # inserted, or there already
        return conversation_from_row(tuple(row))

    async def append(
        self, pool: asyncpg.Pool, conversation_id: str, messages: Sequence[JSONDict], o: TurnOptions
    ) -> bool:
        """Three statements in one transaction (each a round trip): create if new; lock the row
        and read the next seq; write the items, the counters and the trim together."""
        async with pool.acquire() as conn, conn.transaction():
            if o.create_for is not None:
                record = ConversationRecord(conversation_id, o.create_for, o.now, o.now)
                await conn.execute(self.sql.insert_conv, *conversation_to_row(record))
            row = await conn.fetchrow(self._lock_sql, conversation_id)
            if row is None:
                return False
            stored = conversation_from_row(tuple(row)[: len(CONVERSATION_COLUMNS)])
            if o.scope is not None and not o.scope.allows(stored.owner):
                return False
            turn = stored.turns + 1
            await conn.execute(
                self._write_sql,
                conversation_id,
                [_dumps(m) for m in messages],
                turn,
                o.now,
                o.system,
                turn - o.max_turns,
            )
        return True

    async def list_for(
        self, pool: asyncpg.Pool, scope: ConversationScope, limit: int, before: float | None
    ) -> list[ConversationRecord]:
        sql, params = self.sql.list_conversations(scope, limit, before)
        return [conversation_from_row(tuple(row)) for row in await pool.fetch(sql, *params)]

    async def delete(self, pool: asyncpg.Pool, conversation_id: str) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(self.sql.delete_items, conversation_id)
            return _count(await conn.execute(self.sql.delete_conv, conversation_id)) > 0

    async def purge(self, pool: asyncpg.Pool, before: float) -> int:
        total = 0
        while True:  # one short transaction per chunk
            async with pool.acquire() as conn, conn.transaction():
                ids = [row[0] for row in await conn.fetch(self.sql.purge_convs, before)]
                if ids:
                    await conn.execute(
                        f"DELETE FROM {self.sql.t_items} WHERE conversation_id = ANY($1::text[])", ids
                    )
                deleted = len(ids) + _count(await conn.execute(self.sql.purge_responses, before))
            total += deleted
            if deleted == 0:
                return total

    async def put_response(self, pool: asyncpg.Pool, response: StoredResponse) -> None:
        await pool.execute(self.sql.insert_response, *response_to_row(response))

    async def chain(self, pool: asyncpg.Pool, response_id: str, max_depth: int) -> list[StoredResponse]:
        rows = await pool.fetch(self.sql.chain, response_id, max_depth)
        return [response_from_row(tuple(row)) for row in rows]

    async def delete_response(self, pool: asyncpg.Pool, response_id: str) -> bool:
        return _count(await pool.execute(self.sql.delete_response, response_id)) > 0
