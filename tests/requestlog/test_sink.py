"""The sink: never blocks or raises in ``emit``, retries a failed commit without losing rows,
skips non-inference requests, and purges by retention."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from modelyard.config.schema import RequestLogConfig
from modelyard.store.requestlog import RequestQuery, RequestRow
from modelyard.store.sqlite import SqliteStore
from modelyard.telemetry.record import RequestRecord
from modelyard.telemetry.requestlog_sink import RequestLogSink, response_text


class FlakyStore(SqliteStore):
    """Fails the first ``failures`` request-log commits, as a locked or lost database would."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def write_requests(self, rows: Sequence[RequestRow]) -> int:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return await super().write_requests(rows)


def record(
    request_id: str, *, path: str = "/v1/chat/completions", operation: str = "chat", at: float = 0.0
) -> RequestRecord:
    return RequestRecord(
        request_id=request_id, started_at=at or 1_000_000.0, duration_ms=5.0, method="POST", path=path,
        operation=operation, dialect="openai", status=200, outcome="ok", error_type=None, error_message=None,
        model_requested="m", deployment="fake/echo", provider="fake", response_model="echo", route="primary",
        local=False, stream=False, tokens_in=1, tokens_out=2, tokens_cache_read=0, tokens_cache_write=0,
        cost_nano=3, ttft_ms=None, overhead_ms=0.1, key_id=None, key_hint="master", team_id=None,
        user_id=None, tags=(),
    )  # fmt: skip


async def test_a_failed_commit_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "db.sqlite"), failures=3)
    await store.open()
    sink = RequestLogSink(store, RequestLogConfig())
    sink.start()
    try:
        for i in range(1200):  # more than one batch
            sink.emit(record(f"r{i}"))
        sink.emit(record("admin", path="/admin/keys", operation="admin"))  # not an inference request
        assert await sink.flush(timeout_s=20)
        assert sink.failed_commits == 3 and sink.dropped == 0 and sink.written == 1200
        rows = await store.search_requests(RequestQuery(limit=10_000))
        assert len(rows) == 1200 and "admin" not in {r.request_id for r in rows}
    finally:
        await sink.aclose()
        await store.aclose()


async def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    sink = RequestLogSink(store, RequestLogConfig(max_queue=10))  # never started: nothing drains
    for i in range(15):
        sink.emit(record(f"r{i}"))
    assert sink.queued == 10 and sink.dropped == 5


async def test_retention_purge(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    now = 2_000_000_000.0
    sink = RequestLogSink(store, RequestLogConfig(retention_days=1), clock=lambda: now)
    sink.start()
    try:
        sink.emit(record("old", at=now - 2 * 86400))
        sink.emit(record("new", at=now - 3600))
        assert await sink.flush(timeout_s=10)
        assert await sink.purge_now() == 1
        assert [r.request_id for r in await store.search_requests(RequestQuery())] == ["new"]
    finally:
        await sink.aclose()
        await store.aclose()


def test_answer_text_of_each_protocol() -> None:
    openai = b'{"choices":[{"message":{"role":"assistant","content":"hi"}}]}'
    anthropic = b'{"content":[{"type":"text","text":"hello"}]}'
    assert response_text(openai) == "hi" and response_text(anthropic) == "hello"
    assert response_text(b"not json") == "not json" and response_text(None) is None


class CountingStore(SqliteStore):
    """Counts the request-log transactions and the rows each carried."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    async def write_requests(self, rows: Sequence[RequestRow]) -> int:
        self.batches.append(len(rows))
        return await super().write_requests(rows)


@contextlib.asynccontextmanager
async def counting_sink(
    tmp_path: Path, linger_ms: float
) -> AsyncIterator[tuple[CountingStore, RequestLogSink]]:
    store = CountingStore(str(tmp_path / "db.sqlite"))
    await store.open()
    sink = RequestLogSink(store, RequestLogConfig(batch_linger_ms=linger_ms))
    sink.start()
    try:
        yield store, sink
    finally:
        await sink.aclose()
        await store.aclose()


async def test_rows_of_requests_a_few_ms_apart_share_one_transaction(tmp_path: Path) -> None:
    """One request at a time (rows 2 ms apart) still commits in batches: the linger gathers them."""
    async with counting_sink(tmp_path, 200) as (store, sink):
        for i in range(10):
            sink.emit(record(f"r{i}"))
            await asyncio.sleep(0.002)
        assert await sink.flush(timeout_s=5)
        assert sum(store.batches) == 10 and len(store.batches) <= 2, store.batches


async def test_flush_does_not_wait_out_the_linger(tmp_path: Path) -> None:
    async with counting_sink(tmp_path, 1000) as (store, sink):
        sink.emit(record("r1"))
        started = time.monotonic()
        assert await sink.flush(timeout_s=5)
        assert time.monotonic() - started < 0.5
        assert store.batches == [1]


async def test_without_a_linger_each_row_is_written_at_once(tmp_path: Path) -> None:
    async with counting_sink(tmp_path, 0) as (store, sink):
        sink.emit(record("r1"))
        for _ in range(200):
            if store.batches:
                break
            await asyncio.sleep(0.005)
        assert store.batches == [1]
