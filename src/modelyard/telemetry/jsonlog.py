"""Structured request logs: one JSON line per finished request (``observability.log_format: json``).

The sink serialises the record with orjson, redacts the whole line (configured secrets, key-shaped
values, sensitive header values, ``key`` query parameters; see
:class:`~modelyard.telemetry.redaction.TelemetryRedactor`) and hands the bytes to a
:class:`LineWriter`: a bounded queue drained by a writer thread, so a slow disk or a blocked
stderr pipe never stalls the event loop. When the queue is full, lines are dropped and counted
(``dropped``) rather than waited for.

A line looks like (wrapped here)::

    {"ts":"2026-05-01T12:00:00.123Z","event":"request","request_id":"req_…","method":"POST",
     "path":"/v1/chat/completions","operation":"chat","dialect":"openai","status":200,
     "outcome":"ok","error_type":null,"error":null,"key":"myd_…Ab12","key_id":"key_…",
     "team":"ml","user":null,"model":"gpt-4o","deployment":"openai/gpt-4o","provider":"openai",
     "response_model":"gpt-4o","route":"primary","local":false,"stream":true,"cache":null,
     "attempts":[{"deployment":"openai/gpt-4o","outcome":"ok","status":200,"latency_ms":812.4}],
     "tokens":{"input":12,"output":40,"cache_read":0,"cache_write":0},"cost_usd":0.000432,
     "duration_ms":815.2,"ttft_ms":210.7,"overhead_ms":0.41,"tags":[]}
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from modelyard.redact import Redactor
from modelyard.store.base import NANO_PER_USD
from modelyard.telemetry.record import RequestRecord

__all__ = ["JsonLogSink", "LineWriter", "json_default", "record_to_dict"]

QUEUE_LINES = 10_000
"""Lines held for the writer thread at most; beyond this, lines are dropped (and counted)."""


class LineWriter:
    """Writes byte lines to a stream from a background thread; ``write`` never blocks."""

    def __init__(self, path: str | None = None, *, stream: IO[bytes] | None = None) -> None:
        self._path = path
        self._stream = stream
        self._own = False
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_LINES)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._stream is None:
            if self._path is not None:
                file = Path(self._path).expanduser()
                file.parent.mkdir(parents=True, exist_ok=True)
                # Append mode: several worker processes can share the file, one write per line.
                self._stream = open(file, "ab", buffering=0)  # noqa: SIM115 (closed in stop)
                self._own = True
            else:
                self._stream = sys.stderr.buffer
        self._thread = threading.Thread(target=self._run, name="modelyard-jsonlog", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            line = self._queue.get()
            if line is None:
                break
            batch = [line]
            # Drain what else is waiting so one write (and flush) carries many lines.
            with contextlib.suppress(queue.Empty):
                while len(batch) < 512:
                    more = self._queue.get_nowait()
                    if more is None:
                        self._queue.put(None)
                        break
                    batch.append(more)
            try:
                stream.write(b"".join(batch))
                stream.flush()
            except (OSError, ValueError):
                self.dropped += len(batch)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write out what is queued, then stop (blocking up to ``timeout_s``)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None
        if self._own and self._stream is not None:
            self._stream.close()
            self._stream = None


def json_default(value: object) -> str:
    """orjson's fallback: captured bodies arrive as bytes (text, as sent), anything else as str()."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_to_dict(record: RequestRecord, *, content: bool = True) -> dict[str, Any]:
    """The JSON shape of one request line (not yet redacted)."""
    line: dict[str, Any] = {
        "ts": _iso(record.started_at),
        "event": "request",
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "operation": record.operation,
        "dialect": record.dialect,
        "status": record.status,
        "outcome": record.outcome,
        "error_type": record.error_type,
        "error": record.error_message,
        "key": record.key_hint,
        "key_id": record.key_id,
        "team": record.team_id,
        "user": record.user_id,
        "model": record.model_requested,
        "deployment": record.deployment,
        "provider": record.provider,
        "response_model": record.response_model,
        "route": record.route,
        "local": record.local,
        "stream": record.stream,
        "cache": record.cache,
        "context": record.context,
        "attempts": [
            {"deployment": a.deployment, "outcome": a.outcome, "status": a.status, "latency_ms": a.latency_ms}
            for a in record.attempts
        ],
        "tokens": {
            "input": record.tokens_in,
            "output": record.tokens_out,
            "cache_read": record.tokens_cache_read,
            "cache_write": record.tokens_cache_write,
        },
        "cost_usd": record.cost_nano / NANO_PER_USD,
        "duration_ms": record.duration_ms,
        "ttft_ms": record.ttft_ms,
        "overhead_ms": record.overhead_ms,
        "tags": record.tags,
        "smart_route": (
            {"route": record.route_name, "reason": record.route_reason, "detail": record.route_detail}
            if record.route_name is not None
            else None
        ),
    }
    if content and record.prompt is not None:
        line["prompt"] = record.prompt
    if content and record.response is not None:
        line["response"] = record.response
    return line


class JsonLogSink:
    """A telemetry sink writing one redacted JSON line per request through a :class:`LineWriter`."""

    def __init__(self, writer: LineWriter, redact: Redactor) -> None:
        self.writer = writer
        self._redact = redact
        self._pid = os.getpid()

    def emit(self, record: RequestRecord) -> None:
        data = record_to_dict(record)
        data["pid"] = self._pid
        text = orjson.dumps(data, default=json_default).decode()
        self.writer.write(self._redact(text).encode() + b"\n")
