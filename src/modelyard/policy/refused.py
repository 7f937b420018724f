"""Ledger rows for requests refused before any upstream attempt.

A request turned away at admission — a bad key (401), a model the key may not use (403), a rate
limit or budget (429), bad input (4xx), no capacity (503) — has no attempt, so settlement writes
no row for it. This sink gives each one a single ledger row all the same, so that every inference
request leaves a ledger record:

* ``attempt`` 0, ``status`` ``refused``, ``http_status`` the status sent, ``route_reason``
  ``refused:<why>`` (``unauthorized``, ``forbidden``, ``rate_limited``, ``budget_exceeded``,
  ``invalid_request``, ``not_found``, ``unavailable``, ``http_<status>``), cost 0, no tokens,
  ``deployment`` empty. Budgets are not touched (the rows are written without a reservation).
* Nothing of the presented credential is stored: a refused key's row carries no key id (the
  request had no valid key) and no hint of the secret.
* **Not a DoS amplifier.** ``emit`` appends to a bounded in-memory queue (constant time, no I/O);
  one task writes what has gathered every ``flush_interval_s`` as a *single* store settlement (one
  multi-row insert in the store's group commit), so a flood of 401s costs one write per interval,
  not one per request. Beyond ``max_queue`` records waiting, new ones are dropped and counted in
  :attr:`RefusedLedger.dropped` (logged), rather than stalling the writer that settles real spend.
  Their requests are still in the request log and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable

from modelyard.store.base import AttemptRow, Settlement, Store
from modelyard.telemetry.record import RequestRecord

log = logging.getLogger("modelyard.ledger")

__all__ = ["LEDGER_OPERATIONS", "REFUSED_ATTEMPT", "RefusedLedger", "refusal_reason", "refused_row"]

LEDGER_OPERATIONS = frozenset({"chat", "embeddings"})
"""Operations whose served requests are in the ledger (and so their refused ones too)."""
REFUSED_ATTEMPT = 0
"""The ``attempt`` of a refused request's row: real attempts count from 1, recovery writes -1."""
MAX_BATCH = 2000


def refusal_reason(status: int, message: str | None) -> str:
    """Why a request was refused, from the status (and message) it was answered with."""
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status == 429:
        return "budget_exceeded" if message and "budget_exceeded" in message else "rate_limited"
    if status in (400, 405, 411, 413, 415, 422):
        return "invalid_request"
    if status == 404:
        return "not_found"
    if status in (503, 529):
        return "unavailable"
    return f"http_{status}"


def refused_row(record: RequestRecord) -> AttemptRow:
    """The ledger row of a refused request."""
    return AttemptRow(
        request_id=record.request_id,
        attempt=REFUSED_ATTEMPT,
        key_id=record.key_id,
        team_id=record.team_id,
        user_id=record.user_id,
        org_id=None,
        tags=record.tags,
        model_requested=record.model_requested or "",
        deployment="",
        route_reason="refused:" + refusal_reason(record.status, record.error_message),
        local=False,
        tokens_in=0,
        tokens_out=0,
        tokens_cache_read=0,
        tokens_cache_write=0,
        cost_nano=0,
        status="refused",
        http_status=record.status,
        latency_ms=record.duration_ms,
        ttft_ms=None,
        created_at=record.started_at,
    )


class RefusedLedger:
    """A telemetry sink: a ledger row for each inference request answered without an attempt."""

    def __init__(
        self,
        store: Store,
        *,
        max_queue: int = 10_000,
        flush_interval_s: float = 0.25,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_drop = on_drop  # e.g. the modelyard_ledger_refused_dropped_total counter
        self._max_queue = max_queue
        self._interval = flush_interval_s
        self._queue: deque[AttemptRow] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._batch_prefix = "refused:" + os.urandom(6).hex() + ":"
        self._batches = 0
        self.dropped = 0
        """Refused requests not recorded because the queue was full."""
        self.written = 0
        """Rows handed to the store."""

    def emit(self, record: RequestRecord) -> None:
        if record.operation not in LEDGER_OPERATIONS or record.status < 400 or record.attempts:
            return
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "refused-request ledger queue full (%d rows): %d refused requests not recorded "
                    "in the ledger so far (they are in the request log)",
                    len(self._queue),
                    self.dropped,
                )
            return
        self._queue.append(refused_row(record))
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._wake = asyncio.Event()
        if self._queue:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="refused-ledger")

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._interval)  # gather a flood into one write
            self._wake.clear()
            while self._queue:
                await self._write_batch()

    async def _write_batch(self) -> None:
        count = min(len(self._queue), MAX_BATCH)
        rows = tuple(self._queue.popleft() for _ in range(count))
        self._batches += 1
        # One settlement of many requests' rows: its id matches no reservation, so the store
        # writes the rows and moves no budget. The store retries it until committed.
        try:
            await self._store.settle(Settlement(f"{self._batch_prefix}{self._batches}", rows))
        except BaseException:
            self._queue.extendleft(reversed(rows))  # not handed over: keep them for the next try
            raise
        self.written += count

    async def flush(self) -> None:
        """Hand every queued row to the store (the store's own flush commits them)."""
        while self._queue:
            await self._write_batch()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
