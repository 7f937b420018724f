"""Durable state: keys, budgets, reservations and the ledger, in SQLite or PostgreSQL."""
