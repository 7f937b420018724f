"""Providers: one small async interface, one adapter per API family."""
