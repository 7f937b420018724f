"""Group commit, shared by both backends.

Callers of ``reserve`` and ``settle`` never open a transaction themselves. They put their work in
memory and two writer tasks per store commit whatever has gathered, each batch in one transaction:

* **The reservation lane** commits waiting reservations at once, never behind a settlement batch
  (PostgreSQL gives each lane its own connection; SQLite's one writer thread runs whichever commit
  comes first). ``reserve`` waits for its own result: its pending row is durable when it returns.
  A reservation commit also carries up to :data:`PIGGYBACK` queued settlements, so at low
  concurrency a request's settlement rides on the next request's reservation commit.
* **The settlement lane** commits what is left. Settlements alone wait for company — until
  :data:`SETTLE_BATCH` are queued or the oldest has waited :data:`SETTLE_LINGER_S` — so one commit
  carries many; ``flush`` and closing cut the wait short. It never starts while a reservation
  commit runs (that commit would wait for its budget row locks, and the next one carries the
  settlements anyway) unless ``max_batch`` are queued.

``settle`` returns once queued; the queue is bounded (callers wait for room, nothing is dropped). A
batch whose commit fails goes back to the queue in its place and is retried with backoff, forever.
``flush`` waits until everything queued before it is committed; closing flushes everything.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelyard.errors import NotReadyError
from modelyard.store.base import Denied, Reservation, Settlement, Store

log = logging.getLogger("modelyard.store")

BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 1.0

SETTLE_LINGER_S = 0.01
"""How long the oldest queued settlement waits for company before its commit (10 ms). Longer than
one request at low concurrency, so that a settlement rides on the next reservation's commit: a
settlement commit of its own would hold the budget rows that reservation needs."""
SETTLE_BATCH = 64
"""Settlements queued that start a settlement commit without waiting."""
PIGGYBACK = 64
"""Most settlements a reservation commit carries (more would delay the admission)."""

Lane = Literal["reserve", "settle", "recover"]
"""Which writer a commit comes from: backends that can commit concurrently give each its own
connection; ``recover`` is :meth:`BatchingStore.recover_pending`."""


@dataclass(slots=True)
class _ReserveJob:
    reservation: Reservation
    future: asyncio.Future[Denied | None]
    queued_at: float


@dataclass(slots=True, order=True)
class _Queued:
    seq: int
    queued_at: float = field(compare=False)
    settlement: Settlement = field(compare=False)


@dataclass(frozen=True, slots=True)
class CommitResult:
    decisions: list[Denied | None]
    """One per reservation, in order."""
    settled: int
    """Reservations moved from pending to settled (what ``recover_pending`` counts)."""


class BatchingStore(Store):
    """A :class:`Store` whose ``reserve``/``settle`` go through group-commit writer tasks.

    Subclasses implement :meth:`_commit` (one transaction) and :meth:`_is_transient`, and say with
    :attr:`concurrent_commits` whether two commits can make progress at once.
    """

    concurrent_commits = True
    """Whether the backend runs two commits at once (PostgreSQL: two connections). When not
    (SQLite: one writing connection, one fsync at a time), one writer commits everything waiting
    together — the reservations with up to ``max_batch`` settlements — since a separate settlement
    commit would only queue in front of the next reservation's."""

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
        self._settlements: deque[_Queued] = deque()
        self._in_flight: dict[int, list[_Queued]] = {}
        """Settlement batches being committed, by their first sequence number."""
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._reserve_wake = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settle_now = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._recover_lock = asyncio.Lock()
        self._reserving = False
        """A reservation commit is in progress (the settlement lane keeps out of its way)."""
        self._reserve_idle = asyncio.Event()
        self._reserve_idle.set()
        self._writers: list[asyncio.Task[None]] = []
        self._closing = False
        self.failed_commits = 0
        """Commits that failed and were retried (a metric; nothing is dropped)."""

    # -- subclass interface ------------------------------------------------------------------
    @abc.abstractmethod
    async def _commit(
        self,
        reserves: list[Reservation],
        settlements: list[Settlement],
        recover_before: float | None,
        lane: Lane,
    ) -> CommitResult:
        """One transaction: settle, then reserve, then (if asked) recover overdue reservations.
        Commits of different lanes may run at the same time; never two of one lane."""

    @abc.abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same work may succeed (busy, locked, connection lost...)."""

    def _is_disk_full(self, exc: BaseException) -> bool:
        """A full disk: admissions fail at once (503, RELIABILITY D5) while settlements, which
        record requests already served, stay queued and are retried until space returns."""
        return False

    # -- lifecycle helpers for subclasses ----------------------------------------------------
    @property
    def _writing(self) -> bool:
        """Whether the writer tasks run (between ``_start_writer`` and ``_stop_writer``)."""
        return bool(self._writers)

    def _start_writer(self) -> None:
        self._closing = False
        self._reserve_wake = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settle_now = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._recover_lock = asyncio.Lock()
        self._reserving = False
        self._reserve_idle = asyncio.Event()
        self._reserve_idle.set()
        loop = asyncio.get_running_loop()
        if self.concurrent_commits:
            self._writers = [
                loop.create_task(self._reserve_loop(), name="store-reserve-writer"),
                loop.create_task(self._settle_loop(), name="store-settle-writer"),
            ]
        else:
            self._reserve_wake = self._settle_wake  # one writer, woken by either
            self._writers = [loop.create_task(self._settle_loop(), name="store-writer")]

    async def _stop_writer(self) -> None:
        await self.flush()
        self._closing = True
        self._reserve_wake.set()
        self._settle_wake.set()
        self._settle_now.set()
        writers, self._writers = self._writers, []
        await asyncio.gather(*writers)

    @property
    def queued_settlements(self) -> int:
        """Settlements not yet committed: queued or in a commit now."""
        return len(self._settlements) + sum(len(batch) for batch in self._in_flight.values())

    @property
    def queued_reservations(self) -> int:
        """Reservations waiting for their commit (not counting one in progress)."""
        return len(self._reserve_jobs)

    # -- Store API ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation) -> Denied | None:
        if reservation.max_cost_nano < 0:
            raise ValueError(f"max_cost_nano must be >= 0, got {reservation.max_cost_nano}")
        self._require_open()
        future: asyncio.Future[Denied | None] = asyncio.get_running_loop().create_future()
        self._reserve_jobs.append(_ReserveJob(reservation, future, time.monotonic()))
        self._reserve_wake.set()
        if not self.concurrent_commits:
            self._settle_now.set()  # the one writer stops lingering: an admission is waiting
        return await future

    async def settle(self, settlement: Settlement) -> None:
        self._require_open()
        while self.queued_settlements >= self._max_queued:
            self._room.clear()
            await self._room.wait()
        self._last_seq = next(self._seq)
        self._settlements.append(_Queued(self._last_seq, time.monotonic(), settlement))
        self._settle_wake.set()
        if len(self._settlements) >= SETTLE_BATCH:
            self._settle_now.set()

    async def flush(self) -> None:
        target = self._last_seq
        if self._committed_through() >= target:
            return
        self._require_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))
        self._settle_wake.set()
        self._settle_now.set()
        await future

    async def recover_pending(self, now: float) -> int:
        self._require_open()
        deadline = time.monotonic() + self._reserve_timeout_s
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                async with self._recover_lock:
                    return (await self._commit([], [], now, "recover")).settled
            except Exception as exc:
                if not self._is_transient(exc) or time.monotonic() > deadline:
                    raise
                log.warning("recovering pending reservations failed, retrying: %s", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # -- the writers -------------------------------------------------------------------------
    def _require_open(self) -> None:
        if not self._writers or self._closing:
            raise RuntimeError("the store is not open: call `await store.open()` first")

    def _committed_through(self) -> int:
        """Every settlement with a sequence number up to this one is committed."""
        first = [batch[0].seq for batch in self._in_flight.values()]
        if self._settlements:
            first.append(self._settlements[0].seq)
        return min(first) - 1 if first else self._last_seq

    def _take(self, limit: int) -> list[_Queued]:
        batch = [self._settlements.popleft() for _ in range(min(limit, len(self._settlements)))]
        if batch:
            self._in_flight[batch[0].seq] = batch
        return batch

    def _done(self, batch: list[_Queued], committed: bool) -> None:
        if not batch:
            return
        del self._in_flight[batch[0].seq]
        if not committed:  # back in its place: the queue stays in arrival order
            self._settlements = deque(heapq.merge(batch, self._settlements))
            self._settle_wake.set()
            return
        self._room.set()
        done = self._committed_through()
        waiting = []
        for target, future in self._flush_waiters:
            if done >= target:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._flush_waiters = waiting

    async def _reserve_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        alone = False
        while True:
            if not self._reserve_jobs:
                if self._closing:
                    return
                self._reserve_wake.clear()
                await self._reserve_wake.wait()
                continue
            jobs = [job for job in self._reserve_jobs[: self._max_batch] if not job.future.done()]
            del self._reserve_jobs[: self._max_batch]
            # After a failure, admissions commit apart from settlements: a settlement that cannot
            # be written must not stop new requests from being admitted.
            batch = [] if alone else self._take(PIGGYBACK)
            self._reserving = True
            self._reserve_idle.clear()
            try:
                ok = await self._commit_some(jobs, batch, "reserve")
            finally:
                self._reserving = False
                self._reserve_idle.set()
            if ok:
                backoff, alone = BACKOFF_FIRST_S, False
            else:
                await asyncio.sleep(backoff)
                backoff, alone = min(backoff * 2, BACKOFF_MAX_S), True

    async def _settle_loop(self) -> None:
        """The settlement lane; without concurrent commits, the one writer (reservations first)."""
        backoff = BACKOFF_FIRST_S
        alone = False
        single = not self.concurrent_commits
        while True:
            waiting = single and bool(self._reserve_jobs)
            if not self._settlements and not waiting:
                if self._closing and not self._in_flight:
                    return
                self._settle_wake.clear()
                await self._settle_wake.wait()
                continue
            if not waiting:
                wait = self._settlements[0].queued_at + SETTLE_LINGER_S - time.monotonic()
                if (
                    wait > 0
                    and len(self._settlements) < SETTLE_BATCH
                    and not self._flush_waiters
                    and not self._closing
                ):
                    # Settlements, which nobody waits on, wait for company: one commit (one
                    # fsync) carries many. A reservation commit may take them meanwhile.
                    self._settle_now.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._settle_now.wait(), timeout=wait)
                    continue
            if (
                self._reserving
                and len(self._settlements) < self._max_batch
                and not self._flush_waiters
                and not self._closing
            ):
                # A reservation commit is running: it would wait for this commit's budget row
                # locks, so stay out of its way — the next reservation commit carries these.
                await self._reserve_idle.wait()
                continue
            jobs: list[_ReserveJob] = []
            if single:
                jobs = [job for job in self._reserve_jobs[: self._max_batch] if not job.future.done()]
                del self._reserve_jobs[: self._max_batch]
            if jobs and alone:
                # After a failure, admissions commit apart from settlements: a settlement that
                # cannot be written must not stop new requests from being admitted.
                ok = await self._commit_some(jobs, [], "reserve")
                ok = await self._commit_some([], self._take(self._max_batch), "settle") and ok
            else:
                ok = await self._commit_some(
                    jobs, self._take(self._max_batch), "reserve" if jobs else "settle"
                )
            if ok:
                backoff, alone = BACKOFF_FIRST_S, False
            else:
                await asyncio.sleep(backoff)
                backoff, alone = min(backoff * 2, BACKOFF_MAX_S), True

    async def _commit_some(self, jobs: list[_ReserveJob], batch: list[_Queued], lane: Lane) -> bool:
        if not jobs and not batch:
            return True
        try:
            result = await self._commit(
                [job.reservation for job in jobs], [q.settlement for q in batch], None, lane
            )
        except Exception as exc:
            self.failed_commits += 1
            log.warning(
                "store commit of %d reservations and %d settlements failed; retrying: %r",
                len(jobs),
                len(batch),
                exc,
            )
            self._done(batch, committed=False)
            self._requeue_or_fail(jobs, exc)
            return False
        except BaseException:
            # Cancelled: the callers must not wait forever on a writer that is gone.
            self._done(batch, committed=False)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(NotReadyError("the store is closing"))
            raise
        for job, decision in zip(jobs, result.decisions, strict=True):
            if not job.future.done():
                job.future.set_result(decision)
        self._done(batch, committed=True)
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
