"""Request-log fixtures: ``backend`` (SQLite always; PostgreSQL when MODELYARD_TEST_POSTGRES_DSN
is set, in a throw-away schema) is the store suite's own fixture."""

from tests.store.conftest import backend

__all__ = ["backend"]
