"""Group commit, shared by both backends.

Callers of ``reserve`` and ``settle`` never open a transaction themselves. They put their work in
memory and one writer task per store commits whatever has gathered, in one transaction, while the
next batch gathers behind it. Under load a commit (one fsync) is shared by hundreds of calls; when
idle a call commits alone, at once.

* ``reserve`` waits for its own result (its pending row is durable when it returns).
* ``settle`` returns once queued; the queue is bounded (callers wait for room, nothing is dropped).
  A batch whose commit fails stays at the head of the queue and is retried with backoff, forever.
  ``flush`` waits until everything queued before it is committed.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from modelyard.errors import NotReadyError
from modelyard.store.base import Denied, Reservation, Settlement, Store

log = logging.getLogger("modelyard.store")

BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 1.0


@dataclass(slots=True)
class _ReserveJob:
    reservation: Reservation
    future: asyncio.Future[Denied | None]
    queued_at: float


@dataclass(frozen=True, slots=True)
class CommitResult:
    decisions: list[Denied | None]
    """One per reservation, in order."""
    settled: int
    """Reservations moved from pending to settled (what ``recover_pending`` counts)."""


SETTLE_LINGER_S = 0.01
"""How long settlements alone wait for company before their commit (10 ms)."""


class BatchingStore(Store):
    """A :class:`Store` whose ``reserve``/``settle`` go through one group-commit writer task.

    Subclasses implement :meth:`_commit` (one transaction) and :meth:`_is_transient`.
    """

    def __init__(
        self,
        *,
        max_queued_settlements: int = 100_000,
        max_batch: int = 500,
        reserve_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_queued = max_queued_settlements
        self._max_batch = max_batch
        self._reserve_timeout_s = reserve_timeout_s
        self._clock = clock
        self._reserve_jobs: list[_ReserveJob] = []
        self._settlements: deque[Settlement] = deque()
        self._enqueued = 0
        self._committed = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._commit_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.failed_commits = 0
        """Commits that failed and were retried (a metric; nothing is dropped)."""

    # -- subclass interface ------------------------------------------------------------------
    @abc.abstractmethod
    async def _commit(
        self, reserves: list[Reservation], settlements: list[Settlement], recover_before: float | None
    ) -> CommitResult:
        """One transaction: settle, then reserve, then (if asked) recover overdue reservations."""

    @abc.abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same work may succeed (busy, locked, connection lost...)."""

    def _is_disk_full(self, exc: BaseException) -> bool:
        """A full disk: admissions fail at once (503, RELIABILITY D5) while settlements, which
        record requests already served, stay queued and are retried until space returns."""
        return False

    # -- lifecycle helpers for subclasses ----------------------------------------------------
    def _start_writer(self) -> None:
        self._closing = False
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._commit_lock = asyncio.Lock()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="store-writer")

    async def _stop_writer(self) -> None:
        await self.flush()
        self._closing = True
        self._wake.set()
        self._urgent.set()
        if self._writer is not None:
            await self._writer
            self._writer = None

    @property
    def queued_settlements(self) -> int:
        """Settlements queued and not yet committed."""
        return len(self._settlements)

    # -- Store API ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation) -> Denied | None:
        if reservation.max_cost_nano < 0:
            raise ValueError(f"max_cost_nano must be >= 0, got {reservation.max_cost_nano}")
        self._require_open()
        future: asyncio.Future[Denied | None] = asyncio.get_running_loop().create_future()
        self._reserve_jobs.append(_ReserveJob(reservation, future, time.monotonic()))
        self._wake.set()
        self._urgent.set()
        return await future

    async def settle(self, settlement: Settlement) -> None:
        self._require_open()
        while len(self._settlements) >= self._max_queued:
            self._room.clear()
            await self._room.wait()
        self._settlements.append(settlement)
        self._enqueued += 1
        self._wake.set()

    async def flush(self) -> None:
        target = self._enqueued
        if self._committed >= target:
            return
        self._require_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))
        self._wake.set()
        self._urgent.set()
        await future

    async def recover_pending(self, now: float) -> int:
        self._require_open()
        deadline = time.monotonic() + self._reserve_timeout_s
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                async with self._commit_lock:
                    return (await self._commit([], [], now)).settled
            except Exception as exc:
                if not self._is_transient(exc) or time.monotonic() > deadline:
                    raise
                log.warning("recovering pending reservations failed, retrying: %s", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # -- the writer --------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._writer is None or self._closing:
            raise RuntimeError("the store is not open: call `await store.open()` first")

    async def _write_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        split = False
        while True:
            if not self._reserve_jobs and not self._settlements:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if (
                not self._reserve_jobs
                and not self._flush_waiters
                and len(self._settlements) < self._max_batch
            ):
                # Only settlements, which nobody waits on: linger a little so that one commit
                # (one fsync) carries many of them. A reservation or a flush cuts it short.
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), timeout=SETTLE_LINGER_S)
            jobs = [job for job in self._reserve_jobs[: self._max_batch] if not job.future.done()]
            del self._reserve_jobs[: self._max_batch]
            batch = list(itertools.islice(self._settlements, self._max_batch))
            if split and jobs and batch:
                # After a failure, admissions commit apart from settlements: a settlement that
                # cannot be written must not stop new requests from being admitted.
                ok = await self._commit_some(jobs, [])
                ok = await self._commit_some([], batch) and ok
            else:
                ok = await self._commit_some(jobs, batch)
            if ok:
                backoff, split = BACKOFF_FIRST_S, False
            else:
                await asyncio.sleep(backoff)
                backoff, split = min(backoff * 2, BACKOFF_MAX_S), True

    async def _commit_some(self, jobs: list[_ReserveJob], batch: list[Settlement]) -> bool:
        try:
            async with self._commit_lock:
                result = await self._commit([job.reservation for job in jobs], batch, None)
        except Exception as exc:
            self.failed_commits += 1
            log.warning(
                "store commit of %d reservations and %d settlements failed; retrying: %r",
                len(jobs),
                len(batch),
                exc,
            )
            self._requeue_or_fail(jobs, exc)
            return False
        except BaseException:
            # Cancelled: the callers must not wait forever on a writer that is gone.
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(NotReadyError("the store is closing"))
            raise
        for job, decision in zip(jobs, result.decisions, strict=True):
            if not job.future.done():
                job.future.set_result(decision)
        for _ in batch:
            self._settlements.popleft()
        self._committed += len(batch)
        self._room.set()
        self._wake_flushers()
        return True

    def _requeue_or_fail(self, jobs: list[_ReserveJob], exc: Exception) -> None:
        now = time.monotonic()
        retry: list[_ReserveJob] = []
        for job in jobs:
            if (
                self._is_transient(exc)
                and not self._is_disk_full(exc)
                and now - job.queued_at < self._reserve_timeout_s
            ):
                retry.append(job)
            elif not job.future.done():
                error = NotReadyError(
                    "the budget database is unavailable, so the request cannot be admitted; "
                    f"retry later ({type(exc).__name__})"
                )
                error.__cause__ = exc
                job.future.set_exception(error)
        self._reserve_jobs[:0] = retry

    def _wake_flushers(self) -> None:
        waiting = []
        for target, future in self._flush_waiters:
            if self._committed >= target:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._flush_waiters = waiting
