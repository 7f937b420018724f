"""Batches reach SQLite as one statement each (``json_each``), whatever their size, and every value
comes back with the type and value ``executemany`` would have stored."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from modelyard.config import load_config
from modelyard.errors import ConfigError
from modelyard.store._sqlite_bulk import bulk_sql, run_bulk
from modelyard.store.base import Scope
from modelyard.store.factory import store_for
from modelyard.store.sqlite import SqliteStore
from tests.store._support import USD, make_budget, reservation, settlement, unique

VALUES = [
    (1, 2**62, 0.1, 1795000000.123456, "plain", "ünïcødé ✓", '["a","b"]', None, True, False),
    (-5, 0, 1e-9, 3.0, "", "quote ' and \" and \\", "{}", None, False, True),
]


def test_values_keep_their_types_and_exact_values() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b INTEGER, c REAL, d REAL, e TEXT, f TEXT, g TEXT, h, i, j)")
    sql = "INSERT INTO t (a, b, c, d, e, f, g, h, i, j) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    run_bulk(conn, bulk_sql(sql, 10), VALUES)
    conn.execute("CREATE TABLE u AS SELECT * FROM t WHERE 0")
    conn.executemany(sql.replace("INTO t", "INTO u"), VALUES)
    bulk = conn.execute(
        "SELECT *, typeof(a), typeof(c), typeof(h), typeof(i) FROM t ORDER BY rowid"
    ).fetchall()
    many = conn.execute(
        "SELECT *, typeof(a), typeof(c), typeof(h), typeof(i) FROM u ORDER BY rowid"
    ).fetchall()
    assert bulk == many


def test_an_upsert_adds_each_row_in_order() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE r (k TEXT PRIMARY KEY, n INTEGER)")
    sql = "INSERT INTO r (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = r.n + excluded.n"
    run_bulk(conn, bulk_sql(sql, 2), [("x", 1), ("y", 2), ("x", 10)])
    run_bulk(conn, bulk_sql(sql, 2), [])  # nothing to do: no statement
    assert dict(conn.execute("SELECT k, n FROM r")) == {"x": 11, "y": 2}


def test_a_statement_without_one_values_row_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one"):
        bulk_sql("INSERT INTO r (k) SELECT 1", 1)


async def test_a_commit_runs_the_same_statements_for_3_rows_as_for_300(tmp_path: Path) -> None:
    """The GIL is taken back once per statement step: a batch must not cost a step per row."""
    store = SqliteStore(str(tmp_path / "ledger.db"))
    await store.open()
    budgets = ((Scope.KEY, "k1"), (Scope.TEAM, "t1"))
    try:
        for scope, scope_id in budgets:
            await make_budget(store, scope, scope_id, 1000 * USD)

        async def statements_for(n: int) -> tuple[int, int, int]:
            """(statements, commits, ledger inserts) while ``n`` settlements are committed."""
            ids = [unique("r") for _ in range(n)]
            for request_id in ids:
                assert (
                    await store.reserve(reservation(request_id, 1000, budgets, created_at=time.time()))
                    is None
                )
            await store.flush()
            seen: list[str] = []
            assert store._wconn is not None
            await store._in_writer(store._wconn.set_trace_callback, seen.append)
            for request_id in ids:
                await store.settle(settlement(request_id, 700, created_at=time.time()))
            await store.flush()
            await store._in_writer(store._wconn.set_trace_callback, None)
            commits = sum(1 for s in seen if s == "COMMIT")
            return len(seen), commits, sum(1 for s in seen if s.startswith("INSERT INTO ledger"))

        for n in (3, 300):
            statements, commits, inserts = await statements_for(n)
            assert 1 <= commits <= 10 and inserts <= commits, (n, statements, commits, inserts)
            assert statements <= 12 * commits, (n, statements, commits)  # not one per row
        assert len(await store.ledger_rows(limit=10_000)) == 303
    finally:
        await store.aclose()


async def test_a_too_old_sqlite_library_is_refused_with_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteStore(str(tmp_path / "ledger.db"))
    with pytest.raises(RuntimeError, match=r"SQLite 3\.31\.1 is too old .* 3\.35\.0 or newer.*PostgreSQL"):
        await store.open()
    await store.aclose()


@pytest.mark.parametrize(("setting", "pragma"), [(None, 2), ("full", 2), ("normal", 1)])
async def test_storage_sqlite_synchronous_reaches_the_writer(
    tmp_path: Path, setting: str | None, pragma: int
) -> None:
    """``storage.sqlite_synchronous``: from the config file to the writing connection (FULL 2, NORMAL 1)."""
    text = "embedded_models: false\ncloud_models_from_env: false\n"
    if setting is not None:
        text += f"storage:\n  sqlite_synchronous: {setting}\n"
    config = load_config(text, source="x.yaml", environ={})
    store = store_for(
        f"sqlite:///{tmp_path / 'ledger.db'}", sqlite_synchronous=config.storage.sqlite_synchronous
    )
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        assert store._wconn is not None
        (value,) = await store._in_writer(lambda: store._wconn.execute("PRAGMA synchronous").fetchone())  # type: ignore[union-attr]
        assert value == pragma
    finally:
        await store.aclose()


def test_an_unknown_sqlite_synchronous_value_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"sqlite_synchronous[\s\S]*'full' or 'normal'"):
        load_config("storage:\n  sqlite_synchronous: off\n", source="x.yaml", environ={})
