"""Open the store a database URL names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from modelyard.store.base import Store


def store_for(url: str, *, sqlite_synchronous: Literal["full", "normal"] = "full") -> Store:
    """``sqlite:///abs/path.db`` → SqliteStore (its folder created); ``postgresql://…`` → PostgresStore.

    ``sqlite_synchronous``: the SQLite store's ``PRAGMA synchronous`` (``storage.sqlite_synchronous``)."""
    if url.startswith("sqlite:///"):
        from modelyard.store.sqlite import SqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteStore(str(path), synchronous=sqlite_synchronous)
    from modelyard.store.postgres import PostgresStore

    return PostgresStore(url)
