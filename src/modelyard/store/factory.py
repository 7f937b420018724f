"""Open the store a database URL names."""

from __future__ import annotations

from pathlib import Path

from modelyard.store.base import Store


def store_for(url: str) -> Store:
    """``sqlite:///abs/path.db`` → SqliteStore (its folder created); ``postgresql://…`` → PostgresStore."""
    if url.startswith("sqlite:///"):
        from modelyard.store.sqlite import SqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteStore(str(path))
    from modelyard.store.postgres import PostgresStore

    return PostgresStore(url)
