"""Telemetry: one record per request, fanned out to metrics, traces, logs and the request log."""
