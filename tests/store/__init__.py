"""Tests of the durable stores (SQLite always, PostgreSQL when MODELYARD_TEST_POSTGRES_DSN is set)."""
