"""Admission policy: virtual keys, budgets and rate limits."""
