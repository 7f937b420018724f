"""The request-log sink: every finished inference request becomes one stored row, off the hot path.

``emit`` only appends the record to an in-memory queue (constant time, never raises, never
waits). One writer task turns queued records into rows and writes them in batches — the first row
of a batch waits up to ``request_log.batch_linger_ms`` for company, so that at low traffic too one
transaction carries many rows (``flush`` and closing cut the wait short); a batch whose
commit fails stays at the head of the queue and is retried with backoff until it commits (rows are
not lost to a database hiccup). Only when the queue is full — the database has been unavailable for
a long time — are new records dropped, and counted in :attr:`RequestLogSink.dropped`.

A second task purges rows older than ``request_log.retention_days``.

Prompt and answer capture: :func:`capture_stream` tees a streamed answer's bytes (bounded), and
:func:`row_from_record` turns what was captured into text, redacted and cut to size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from modelyard.config.schema import RequestLogConfig
from modelyard.store.base import Store
from modelyard.store.requestlog import RequestRow
from modelyard.telemetry.record import RequestRecord

log = logging.getLogger("modelyard.requestlog")

STORED_OPERATIONS = frozenset({"chat", "embeddings", "count_tokens"})
"""Which requests are logged: inference, not admin calls, health checks or dashboard pages."""
MAX_BATCH = 500
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
FIRST_PURGE_DELAY_S = 5.0


class CapturedStream:
    """The raw bytes of a streamed answer, kept up to ``limit`` bytes (the rest is not kept)."""

    def __init__(self, first: bytes, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.add(first)

    def add(self, chunk: bytes) -> None:
        if self.size < self.limit:
            self.chunks.append(chunk[: self.limit - self.size])
            self.size += len(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)


class _Tee:
    """Passes a stream's chunks through, copying them into a :class:`CapturedStream`."""

    def __init__(self, rest: AsyncIterator[bytes], sink: CapturedStream) -> None:
        self._rest = rest
        self._sink = sink

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anext(self._rest)
        self._sink.add(chunk)
        return chunk


def capture_stream(first: bytes, rest: AsyncIterator[bytes], limit: int) -> tuple[AsyncIterator[bytes], Any]:
    """(the stream to send on, the capture to store as ``ctx.response``)."""
    captured = CapturedStream(first, max(limit * 4, 4096))  # SSE framing is ~4× the text
    return _Tee(rest, captured), captured


# -- record → row --------------------------------------------------------------------------------
def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + f"\n… [cut: {len(data)} bytes, {limit} kept]"


def _answer_of_json(body: Any) -> str | None:
    """The text of a non-streamed OpenAI or Anthropic answer."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if isinstance(choices, list):
        parts = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                if isinstance(message.get("content"), str):
                    parts.append(message["content"])
                for call in message.get("tool_calls") or ():
                    if isinstance(call, dict):
                        parts.append(orjson.dumps(call.get("function")).decode())
        return "\n".join(parts)
    content = body.get("content")
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if block.get("type") == "text":
                    parts.append(str(block.get("text", "")))
                elif block.get("type") == "tool_use":
                    parts.append(
                        orjson.dumps({"name": block.get("name"), "input": block.get("input")}).decode()
                    )
        return "\n".join(parts)
    if isinstance(body.get("data"), list):
        return f"[{len(body['data'])} embeddings]"
    return None


def _answer_of_sse(data: bytes) -> str:
    """The text of a streamed answer, from its SSE events (either protocol)."""
    parts: list[str] = []
    for line in data.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
        delta = event.get("delta")
        if event.get("type") == "content_block_delta" and isinstance(delta, dict):
            parts.append(str(delta.get("text") or delta.get("partial_json") or ""))
    return "".join(parts)


def response_text(value: Any) -> str | None:
    """What a captured answer (raw bytes, a :class:`CapturedStream`, text) says, as text."""
    if value is None:
        return None
    if isinstance(value, CapturedStream):
        return _answer_of_sse(value.data())
    if isinstance(value, bytes | bytearray):
        try:
            answer = _answer_of_json(orjson.loads(value))
        except orjson.JSONDecodeError:
            answer = None
        return answer if answer is not None else bytes(value).decode(errors="replace")
    if isinstance(value, str):
        return value
    answer = _answer_of_json(value)
    return answer if answer is not None else orjson.dumps(value, default=str).decode()


def prompt_text(value: Any) -> str | None:
    """A captured request body as JSON text (without ``stream_options`` noise)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode()


def row_from_record(
    record: RequestRecord, *, max_capture_bytes: int, redact: Callable[[str], str]
) -> RequestRow:
    """The stored row of one record; captured text is redacted, then cut to ``max_capture_bytes``."""
    prompt = prompt_text(record.prompt)
    response = response_text(record.response)
    if prompt is not None:
        prompt = _truncate(redact(prompt), max_capture_bytes)
    if response is not None:
        response = _truncate(redact(response), max_capture_bytes)
    return RequestRow(
        request_id=record.request_id,
        created_at=record.started_at,
        duration_ms=record.duration_ms,
        method=record.method,
        path=record.path,
        operation=record.operation,
        dialect=record.dialect,
        key_id=record.key_id,
        key_hint=record.key_hint,
        team_id=record.team_id,
        user_id=record.user_id,
        tags=tuple(record.tags),
        model=record.model_requested,
        deployment=record.deployment,
        provider=record.provider,
        response_model=record.response_model,
        route=record.route,
        local=record.local,
        stream=record.stream,
        status=record.status,
        outcome=record.outcome,
        error_type=record.error_type,
        error_message=record.error_message,
        tokens_in=record.tokens_in,
        tokens_out=record.tokens_out,
        tokens_cache_read=record.tokens_cache_read,
        tokens_cache_write=record.tokens_cache_write,
        cost_nano=record.cost_nano,
        ttft_ms=record.ttft_ms,
        overhead_ms=record.overhead_ms,
        attempts=tuple(
            {
                "deployment": a.deployment,
                "provider": a.provider,
                "upstream_model": a.upstream_model,
                "local": a.local,
                "outcome": a.outcome,
                "status": a.status,
                "latency_ms": round(a.latency_ms, 3),
                "started_at": a.started_at,
            }
            for a in record.attempts
        ),
        cache=record.cache,
        prompt=prompt,
        response=response,
        captured=prompt is not None or response is not None,
    )


# -- the sink ------------------------------------------------------------------------------------
class RequestLogSink:
    """A telemetry sink that stores each inference request in the ledger database.

    ``start()`` (in the lifespan, after the store opened) starts the writer and the purge task;
    ``aclose()`` writes what is queued (for at most ``close_timeout_s``) and stops them.
    """

    def __init__(
        self,
        store: Store,
        config: RequestLogConfig,
        *,
        redact: Callable[[str], str] = str,
        clock: Callable[[], float] = time.time,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._config = config
        self._redact = redact
        self._clock = clock
        self._close_timeout_s = close_timeout_s
        self._queue: deque[RequestRecord] = deque()
        self._in_flight: list[RequestRow] = []
        self._wake: asyncio.Event | None = None
        self._now: asyncio.Event | None = None
        """Set to end the linger at once (flush, closing, a full batch)."""
        self._oldest_at = 0.0
        """When the oldest queued record was queued (monotonic), to bound its linger."""
        self._writer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self.written = 0
        """Rows committed by this process (a metric)."""
        self.dropped = 0
        """Records dropped because the queue was full (a metric; 0 unless the DB stayed down)."""
        self.failed_commits = 0
        """Batches whose commit failed and was retried (a metric)."""
        self.purged = 0

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._in_flight)

    # -- Sink ------------------------------------------------------------------------------------
    def emit(self, record: RequestRecord) -> None:
        if not self._config.enabled or record.operation not in STORED_OPERATIONS:
            return
        if len(self._queue) >= self._config.max_queue:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "request log queue full (%d records): the database has been unavailable; "
                    "%d records dropped so far",
                    len(self._queue),
                    self.dropped,
                )
            return
        if not self._queue:
            self._oldest_at = time.monotonic()
        self._queue.append(record)
        if self._wake is not None:
            self._wake.set()
            if len(self._queue) >= MAX_BATCH and self._now is not None:
                self._now.set()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._now = asyncio.Event()
        if self._queue:
            self._wake.set()
        self._writer = loop.create_task(self._write_loop(), name="request-log-writer")
        self._purger = loop.create_task(self._purge_loop(), name="request-log-purge")

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is written; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self._now is not None and self.queued:
            self._now.set()  # no lingering: someone waits for these rows
        while self.queued:
            if self._writer is None or self._writer.done():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            if self._now is not None:
                self._now.set()
            await asyncio.sleep(0.005)
        return True

    async def aclose(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self._writer is not None:
            if not await self.flush(self._close_timeout_s):
                log.error("request log: %d records not written at shutdown", self.queued)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._writer = self._purger = None

    # -- tasks -----------------------------------------------------------------------------------
    def _next_batch(self) -> list[RequestRow]:
        rows: list[RequestRow] = []
        while self._queue and len(rows) < MAX_BATCH:
            record = self._queue.popleft()
            try:
                rows.append(
                    row_from_record(
                        record, max_capture_bytes=self._config.max_capture_bytes, redact=self._redact
                    )
                )
            except Exception:  # a record we cannot convert must not stop the others
                log.exception("request log: cannot store request %s", record.request_id)
        return rows

    async def _linger(self) -> None:
        """Wait until the oldest queued record has waited ``batch_linger_ms``, a batch is full,
        or someone flushes: rows written together cost one transaction, not one each."""
        assert self._now is not None
        wait = self._oldest_at + self._config.batch_linger_ms / 1000 - time.monotonic()
        if wait <= 0 or len(self._queue) >= MAX_BATCH:
            return
        self._now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._now.wait(), timeout=wait)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        backoff = BACKOFF_FIRST_S
        while True:
            if not self._in_flight:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._linger()
                self._in_flight = self._next_batch()
                if not self._in_flight:
                    continue
            try:
                await self._store.write_requests(self._in_flight)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Kept at the head of the queue and retried: the write is idempotent.
                self.failed_commits += 1
                log.warning("request log: writing %d rows failed, retrying: %r", len(self._in_flight), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self.written += len(self._in_flight)
            self._in_flight = []
            backoff = BACKOFF_FIRST_S

    async def purge_now(self) -> int:
        """Delete rows older than the retention period; returns how many."""
        before = self._clock() - self._config.retention_days * 86400
        deleted = await self._store.purge_requests(before)
        self.purged += deleted
        if deleted:
            log.info(
                "request log: purged %d requests older than %.1f days", deleted, self._config.retention_days
            )
        return deleted

    async def _purge_loop(self) -> None:
        await asyncio.sleep(FIRST_PURGE_DELAY_S)
        while True:
            try:
                await self.purge_now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("request log: retention purge failed (retried next interval): %r", exc)
            await asyncio.sleep(self._config.purge_interval_s)
