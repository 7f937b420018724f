"""Many rows in one SQLite statement: the batch goes in as one JSON array, read with ``json_each``.

Why not ``executemany``: Python's sqlite3 releases the GIL around every row's ``sqlite3_step`` and
must take it back after each. The store's writer thread shares the GIL with the event loop, and a
busy loop hands the GIL over only every ``sys.getswitchinterval()`` (5 ms): so an ``executemany`` of
500 rows waited up to 500 × 5 ms under load, and the ledger fell seconds behind the traffic (about
800 rows/s while the loop was busy, 60,000/s once it idled). One statement is one wait however many
rows it carries.

``bulk_sql`` turns ``INSERT … VALUES (?, …, ?) [ON CONFLICT …]`` into ``INSERT … SELECT
json_extract(value, '$[0]'), … FROM json_each(?) WHERE true [ON CONFLICT …]`` (SQLite wants the
``WHERE`` before an upsert's ``ON CONFLICT``; ``json_extract`` rather than ``->>``, which needs SQLite
3.38, newer than some distributions ship); ``run_bulk`` binds the rows as one JSON text. Values keep their SQL
types: JSON integers are INTEGER, numbers with a fraction REAL, strings TEXT, null NULL, true/false
1/0 — what the sqlite3 module would have bound for int, float, str, None and bool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson


def bulk_sql(values_sql: str, width: int) -> str:
    """The statement ``values_sql`` (one row of ``width`` ``?`` placeholders after ``VALUES``) fed by
    one JSON array of rows instead."""
    marker = "VALUES (" + ", ".join("?" * width) + ")"
    if values_sql.count(marker) != 1:
        raise ValueError(f"expected one {marker!r} in {values_sql!r}")
    cols = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(width))
    return values_sql.replace(marker, f"SELECT {cols} FROM json_each(?) WHERE true")


def run_bulk(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run a :func:`bulk_sql` statement for ``rows`` (nothing for none)."""
    if rows:
        conn.execute(sql, (orjson.dumps(list(rows)).decode(),))
