"""Routing and execution: which deployment serves a request, and the call itself."""
