"""How admission reserves money: per request in the store, or from per-process budget leases.

``per_request`` (:class:`DirectReservations`, the default): each request's maximum cost is
reserved in the shared store, and its pending row committed, before the upstream call; one commit
to reserve and one to settle per request.

``leased`` (:class:`LeasedReservations`): a process reserves a *lease* — an amount on the same
budgets, as one ordinary pending reservation in the shared store — and admits requests against it in
memory, writing each admission to its local journal (:mod:`modelyard.policy._lease_journal`) before
the upstream call. A request's actual cost is charged to the lease when it finishes; the lease
settles in the store, with every finished request's ledger row, once it is retired (after
``lease_max_age_s``, or when it cannot fit the next request) and its requests are done. So:

- budgets still hold across processes: a lease comes out of the budget atomically in the store, and
  a process never admits more than its leases hold (spend ≤ budget, strictly);
- the store sees two commits per lease instead of two per request;
- a lease is sized from the previous one's use (at least 4 requests' maximum, at most
  ``MAX_LEASE_REQUESTS`` of them), and near the budget's end it shrinks to one request's maximum, so
  what one process holds never refuses another process for long (at most ``lease_max_age_s``);
- ``kill -9``: the journal holds every admission; the next start replays it (finished requests get
  their real rows, unfinished ones the reserved maximum), then releases the rest of the lease;
- a power cut can lose the last tick of journal records: the lease is then settled at its whole
  amount when its deadline passes (conservative, like any pending reservation).

Ledger rows of a lease reach the store when it settles: within about ``lease_max_age_s`` plus the
store's linger. A lease retired with a long request still running is *split*: the running requests'
maxima are reserved on a new lease and the old one settles with the finished rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Protocol

from modelyard.errors import NotReadyError
from modelyard.policy._lease_journal import LeaseJournal, orphans
from modelyard.store.base import AttemptRow, Denied, Reservation, Settlement, Store

log = logging.getLogger("modelyard.leases")

MIN_LEASE_REQUESTS = 4
MAX_LEASE_REQUESTS = 1024
"""A lease holds between this many requests' maximum cost (fewer only near a budget's end)."""
SPLIT_AFTER_AGES = 4
"""A retired lease still waiting on a request this many ages after it began is split."""
TAKE_AHEAD_AFTER = 2
"""A lease that admitted this many requests has its successor reserved before it ends: near the end
of its age, or once three quarters of it is used."""
LEASE_MODEL = "(lease)"
"""``model_requested`` of the row written if a whole lease is settled by deadline recovery."""


class Reservations(Protocol):
    """Reserve a request's maximum cost before the upstream call; settle its attempts after."""

    async def reserve(self, reservation: Reservation) -> Denied | None: ...

    async def settle(self, settlement: Settlement) -> None: ...

    async def flush(self) -> None: ...

    async def recover(self) -> int: ...

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


class DirectReservations:
    """Each request reserved and settled in the store (``storage.reservations: per_request``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def reserve(self, reservation: Reservation) -> Denied | None:
        return await self._store.reserve(reservation)

    async def settle(self, settlement: Settlement) -> None:
        await self._store.settle(settlement)

    async def flush(self) -> None:
        await self._store.flush()

    async def recover(self) -> int:
        return 0  # the store's own recovery settles pending reservations

    def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


LeaseKey = tuple[object, ...]
"""What a lease is shared by: the budgets and owner fields of the requests it admits."""


@dataclass(slots=True, eq=False)
class _Lease:
    id: str
    key: LeaseKey
    owner: Reservation
    """The reservation that opened it: a split's new lease copies its budgets and owner."""
    amount: int
    deadline_at: float
    started: float
    used: int = 0
    """Actual cost of the finished requests plus the maximum of those in flight."""
    peak: int = 0
    admitted: int = 0
    in_flight: dict[str, tuple[int, str, float]] = field(default_factory=dict)
    """request_id -> (maximum cost, model, created_at)."""
    rows: list[AttemptRow] = field(default_factory=list)
    retired: bool = False
    exhausted: bool = False
    closed: bool = False
    split_tried: float = 0.0


def _key_of(r: Reservation) -> LeaseKey:
    return (r.budgets, r.key_id, r.team_id, r.user_id, r.org_id, r.tags)


class LeasedReservations:
    """Per-process budget leases with a local journal (``storage.reservations: leased``)."""

    def __init__(
        self,
        store: Store,
        journal_dir: Path,
        *,
        max_age_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_lease: Callable[[], None] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._journal = LeaseJournal(journal_dir)
        self._on_lease = on_lease
        self._on_wait = on_wait
        self._max_age = max_age_s
        self._interval = max(0.01, min(0.1, max_age_s / 4))
        """How often :meth:`tick` runs."""
        self._clock = clock
        self._wall = wall
        self._ids = itertools.count()
        self._current: dict[LeaseKey, _Lease] = {}
        self._acquiring: dict[LeaseKey, asyncio.Task[_Lease | Denied]] = {}
        self._by_request: dict[str, _Lease] = {}
        self._open: dict[str, _Lease] = {}
        self._last: dict[LeaseKey, tuple[int, float, bool]] = {}
        """Per key, the last retired lease's (peak use, age, exhausted): how to size the next."""
        self._span: dict[LeaseKey, float] = {}
        self._closing: list[_Lease] = []
        """Leases settled (queued in the store) whose commit is not yet confirmed."""
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self.leases_taken = 0
        """Leases reserved in the store so far (each is one commit, and one more to settle)."""
        self.waits = 0
        """Requests that waited for a lease to be reserved (rather than admitted from one at once)."""

    # -- lifecycle ---------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if not self._opened:
            self._journal.open()
            self._opened = True

    async def recover(self) -> int:
        """Settle what dead processes' journals hold; returns the requests charged at their maximum."""
        found = orphans(self._journal.directory, self._wall())
        recovered = 0
        for orphan in found:
            for settlement in orphan.settlements:
                await self._store.settle(settlement)
            await self._store.flush()
            orphan.remove()
            recovered += orphan.recovered_requests
            log.warning(
                "lease journal %s: settled %d leases of a process that stopped (%d requests in flight "
                "charged at their reserved maximum)",
                orphan.lock_path.name,
                len(orphan.settlements),
                orphan.recovered_requests,
            )
        return recovered

    def start(self) -> None:
        self._ensure_open()
        if self._task is None:
            self._task = asyncio.create_task(self._tick_forever(), name="modelyard-leases")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._opened:
            return
        if self._acquiring:  # leases being taken: let them land, so they are settled below
            await asyncio.gather(*self._acquiring.values(), return_exceptions=True)
        await self.flush()
        await self._commit_closed()
        self._journal.close(clean=not self._open)
        if self._open:
            log.warning(
                "%d budget leases still have requests in flight at shutdown; the next start settles "
                "them from the lease journal in %s",
                len(self._open),
                self._journal.directory,
            )
        self._opened = False

    # -- admission ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation) -> Denied | None:
        self._ensure_open()
        key = _key_of(reservation)
        span = max(reservation.deadline_at - reservation.created_at, self._span.get(key, 0.0))
        self._span[key] = span
        waited = False
        for attempt in itertools.count():
            if attempt:
                await asyncio.sleep(0)  # never loop without letting the event loop run
            lease = self._current.get(key)
            if lease is not None:
                if self._fits(lease, reservation):
                    self._admit(lease, reservation)
                    if lease.admitted >= TAKE_AHEAD_AFTER and 0 < lease.amount * 3 <= lease.used * 4:
                        self._take_ahead(lease)  # three quarters used: have the next one ready
                    return None
                lease.exhausted = lease.used + reservation.max_cost_nano > lease.amount
                self._retire(lease)
                if not lease.in_flight:
                    await self._close(lease)  # its unused rest goes back before the next lease
                    continue
            task = self._acquiring.get(key)
            if task is not None and task.done():
                # Finished, but its done-callback has not run yet: awaiting it again would not
                # yield to the loop, and this loop would spin on it forever.
                del self._acquiring[key]
                task = None
            mine = task is None
            if task is None:
                # A task of its own: a caller that goes away (client disconnect) cannot strand a
                # lease committed in the store but unknown here.
                task = asyncio.create_task(self._acquire(key, reservation, span))
                self._acquiring[key] = task
                task.add_done_callback(partial(self._acquired, key))
            if not waited:
                waited = True
                self.waits += 1
                if self._on_wait is not None:
                    self._on_wait()
            result = await asyncio.shield(task)
            if not mine:
                continue
            if isinstance(result, Denied):
                # A lease retired for its age may still hold room: use it rather than refuse.
                spare = next(
                    (x for x in self._open.values() if x.key == key and self._has_room(x, reservation)), None
                )
                if spare is None:
                    if any(closed.key == key for closed in self._closing):
                        # A lease of this key was just settled: once committed, its rest is free.
                        await self._commit_closed()
                        continue
                    return result
                result = spare
            if self._has_room(result, reservation):
                self._admit(result, reservation)
                return None
        raise AssertionError("unreachable: itertools.count() does not end")

    def _count_lease(self) -> None:
        self.leases_taken += 1
        if self._on_lease is not None:
            self._on_lease()

    def _acquired(self, key: LeaseKey, task: asyncio.Task[_Lease | Denied]) -> None:
        if self._acquiring.get(key) is task:
            del self._acquiring[key]
        if not task.cancelled() and task.exception() is not None:
            log.warning("taking a budget lease failed: %s", task.exception())

    def _take_ahead(self, lease: _Lease) -> None:
        """Reserve a busy key's next lease before this one ends, so no request waits for it."""
        if lease.key in self._acquiring:
            return
        task = asyncio.create_task(self._acquire(lease.key, lease.owner, self._span.get(lease.key, 0.0)))
        self._acquiring[lease.key] = task
        task.add_done_callback(partial(self._acquired, lease.key))

    def _fits(self, lease: _Lease, r: Reservation) -> bool:
        return (
            not lease.retired and self._has_room(lease, r) and self._clock() - lease.started < self._max_age
        )

    @staticmethod
    def _has_room(lease: _Lease, r: Reservation) -> bool:
        return (
            not lease.closed
            and lease.used + r.max_cost_nano <= lease.amount
            and r.deadline_at <= lease.deadline_at
        )

    def _admit(self, lease: _Lease, r: Reservation) -> None:
        try:
            self._journal.admitted(lease.id, r.request_id, r.max_cost_nano, r.model, r.created_at)
        except OSError as exc:
            raise NotReadyError(
                f"cannot record the reservation in the lease journal ({exc.strerror}); free space in "
                f"{self._journal.directory} or set storage.lease_journal to a writable directory"
            ) from None
        lease.used += r.max_cost_nano
        lease.peak = max(lease.peak, lease.used)
        lease.admitted += 1
        lease.in_flight[r.request_id] = (r.max_cost_nano, r.model, r.created_at)
        self._by_request[r.request_id] = lease

    def _size(self, key: LeaseKey, cost: int) -> int:
        last = self._last.get(key)
        if last is None:
            target = MIN_LEASE_REQUESTS * cost
        else:
            peak, age, exhausted = last
            growth = min(8.0, self._max_age / max(age, 1e-3)) if exhausted else 1.0
            target = int(2 * peak * growth)
        return max(cost * MIN_LEASE_REQUESTS, min(target, cost * MAX_LEASE_REQUESTS))

    async def _acquire(self, key: LeaseKey, r: Reservation, span: float) -> _Lease | Denied:
        cost = r.max_cost_nano
        first = self._size(key, cost)
        lease_id = f"lease-{self._journal.id[:16]}-{next(self._ids)}"
        now = self._wall()
        try:
            self._journal.lease(lease_id, r)
        except OSError as exc:
            raise NotReadyError(
                f"cannot write the lease journal ({exc.strerror}); free space in {self._journal.directory}"
            ) from None
        denied: Denied | None = None
        # Near a budget's end a big lease is refused: ask for less, down to this request alone.
        for amount in sorted({first, max(cost, first // 8), cost}, reverse=True):
            lease_res = replace(
                r,
                request_id=lease_id,
                max_cost_nano=amount,
                model=LEASE_MODEL,
                created_at=now,
                deadline_at=now + self._max_age * (SPLIT_AFTER_AGES + 1) + span,
            )
            denied = await self._store.reserve(lease_res)
            if denied is None:
                self._count_lease()
                lease = _Lease(lease_id, key, r, amount, lease_res.deadline_at - self._max_age, self._clock())
                previous = self._current.get(key)
                if previous is not None:
                    self._retire(previous)  # taken ahead of time (see tick): the new one admits now
                self._current[key] = lease
                self._open[lease_id] = lease
                return lease
        assert denied is not None
        return denied

    # -- settlement --------------------------------------------------------------------------
    async def settle(self, settlement: Settlement) -> None:
        lease = self._by_request.pop(settlement.request_id, None)
        if lease is None:
            await self._store.settle(settlement)  # not admitted here (refused, or no reservation)
            return
        reserved, _, _ = lease.in_flight.pop(settlement.request_id)
        lease.used += settlement.cost_nano - reserved
        lease.rows.extend(settlement.rows)
        with contextlib.suppress(OSError):  # if lost, replay charges the maximum: never less
            self._journal.finished(settlement)
        if lease.retired and not lease.in_flight:
            await self._close(lease)

    def _retire(self, lease: _Lease) -> None:
        if lease.retired:
            return
        lease.retired = True
        if self._current.get(lease.key) is lease:
            del self._current[lease.key]
        self._last[lease.key] = (lease.peak, self._clock() - lease.started, lease.exhausted)

    async def _close(self, lease: _Lease) -> None:
        if lease.closed:
            return
        lease.closed = True
        try:
            await self._store.settle(Settlement(lease.id, tuple(lease.rows)))
        except BaseException:
            lease.closed = False  # still open: settled later, or replayed from the journal
            raise
        self._open.pop(lease.id, None)
        self._closing.append(lease)

    async def flush(self) -> None:
        """Retire every lease, settle those with no request in flight, and wait for the commits."""
        if self._acquiring:  # leases being taken (ahead): let them land, so they are settled too
            await asyncio.gather(*self._acquiring.values(), return_exceptions=True)
        for lease in list(self._open.values()):
            self._retire(lease)
            if not lease.in_flight:
                await self._close(lease)
        await self._store.flush()

    async def _commit_closed(self) -> None:
        if not self._closing:
            return
        closing = list(self._closing)
        await self._store.flush()
        self._journal.committed([lease.id for lease in closing])
        done = set(closing)
        self._closing = [lease for lease in self._closing if lease not in done]

    # -- upkeep ------------------------------------------------------------------------------
    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("budget lease upkeep failed; retrying on the next tick")

    async def tick(self) -> None:
        """Retire old leases, settle drained ones, split stuck ones, keep the journal short."""
        now = self._clock()
        for lease in list(self._open.values()):
            if not lease.retired and now - lease.started >= self._max_age:
                self._retire(lease)
            elif (
                not lease.retired
                and lease.admitted >= TAKE_AHEAD_AFTER
                and now - lease.started >= self._max_age - 2 * self._interval
            ):
                self._take_ahead(lease)
            if lease.retired and not lease.in_flight:
                await self._close(lease)
            elif (
                lease.retired
                and lease.rows
                and now - lease.started >= self._max_age * SPLIT_AFTER_AGES
                and now - lease.split_tried >= self._max_age
            ):
                lease.split_tried = now
                await self._split(lease)
        await self._commit_closed()
        self._journal.compact()
        await asyncio.to_thread(self._journal.sync)

    async def _split(self, lease: _Lease) -> None:
        """Reserve the running requests' maxima on a new lease, then settle the old one's rows."""
        running = dict(lease.in_flight)
        amount = sum(cost for cost, _, _ in running.values())
        lease_id = f"lease-{self._journal.id[:16]}-{next(self._ids)}"
        now = self._wall()
        first_id = next(iter(running))
        template = replace(
            lease.owner,
            request_id=lease_id,
            max_cost_nano=amount,
            model=LEASE_MODEL,
            created_at=now,
            deadline_at=lease.deadline_at + self._max_age,
        )
        self._journal.lease(lease_id, template)
        if await self._store.reserve(template) is not None:
            log.info("lease %s: no room to split it yet (request %s still running)", lease.id, first_id)
            return
        self._count_lease()
        successor = _Lease(
            lease_id, lease.key, lease.owner, amount, lease.deadline_at, lease.started, retired=True
        )
        self._open[lease_id] = successor
        for request_id in list(lease.in_flight):
            cost, model, created = lease.in_flight.pop(request_id)
            self._journal.admitted(lease_id, request_id, cost, model, created)
            successor.in_flight[request_id] = (cost, model, created)
            successor.used += cost
            self._by_request[request_id] = successor
        await self._close(lease)
        if not successor.in_flight:
            await self._close(successor)
