"""Rate-limit leases: a gateway process takes RPM/TPM capacity from Redis in bulk and admits requests
from it in memory, so a request in steady traffic makes no Redis round trip.

:class:`LeasedRateLimiter` wraps a :class:`~modelyard.policy.ratelimit.RedisRateLimiter` (used with
``storage.reservations: leased``, alongside budget leases). For each set of counters a request must
fit (its *signature*: say key RPM, key TPM, team RPM), the process holds one *lease*: what one
:meth:`RedisRateLimiter.lease` call granted on each counter, atomically and all or nothing, exactly
as a single request's increment-on-check. A request whose costs fit in what the lease has left is
admitted without Redis; otherwise the lease is closed (its unused rest given back, in the same Redis
call that takes the next one) and a new one is taken. So:

- **The limits still hold across processes, exactly.** Everything a process admits came out of a
  Redis counter first. A lease is counted in the window as if it were admitted ``max_age_s`` after it
  was granted, and it admits nothing after that, so no admission ever leaves the window early: at no
  instant do the admissions of the last window add up to more than the limit (RELIABILITY C4, C5).
- **No request waits in steady traffic.** A busy signature's next lease is taken in the background
  when the current one has a quarter of its age (or of its grant) left; the current one admits until
  the new one is in. Only a request that finds its lease used up waits, for one Redis call.
- **Sizes.** A lease wants about twice what its signature used in the previous lease's age (at
  least :data:`MIN_LEASE_REQUESTS` requests' worth), never more than 1/:data:`LEASE_SHARE` of a
  limit, and Redis grants what is left up to that, so near a limit the lease shrinks to the request.
- **What a lease costs others.** Capacity one process holds but has not used refuses another
  process's request until the lease ends (``max_age_s``, 0.5 s by default) and its rest is given back.
  A refused lease puts its signature on per-request admission (plain
  :meth:`RedisRateLimiter.acquire`, with its exact ``Retry-After``) for ``max_age_s``; leases resume
  after that.
- **TPM settlement** gives unused tokens back to the lease while it is open (so later requests of
  the same lease can use them) and to Redis, in the lease's bucket, after.
- **``kill -9``** loses no admission: what a lease did not use stays counted until its window passes
  (refusing, never over-admitting).

:attr:`Decision.at` of a request admitted from a lease is the lease's grant time: pass it to
:meth:`adjust` as usual. ``acquire(checks, now=...)`` (an injected clock, for tests) bypasses leases.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from modelyard.policy.ratelimit import (
    MAX_LEASE_HOLD_S,
    Decision,
    LimitCheck,
    RateLimitBackendError,
    RateLimiter,
    RedisRateLimiter,
)

__all__ = ["LEASE_SHARE", "MIN_LEASE_REQUESTS", "LeasedRateLimiter"]

log = logging.getLogger("modelyard.ratelimit")

MIN_LEASE_REQUESTS = 4
"""A signature's first lease, and any lease, wants at least this many requests' worth."""
MAX_LEASE_REQUESTS = 4096
LEASE_SHARE = 8
"""A lease takes at most ``limit // LEASE_SHARE`` of a counter (or one request's cost, if more)."""
TAKE_AHEAD_AFTER = 2
"""A lease that admitted this many requests has its successor taken ahead, before it runs out."""
AHEAD_AT_AGE_LEFT = 0.25
"""... once this share of its age is left (or a quarter of what it was granted on any counter)."""
_FORGET_AFTER_AGES = 20
"""A closed lease is kept this many ages for the next one's sizing, then forgotten."""

_Counter = tuple[str, str, str]
_Signature = tuple[_Counter, ...]


def _counter(check: LimitCheck) -> _Counter:
    return (check.scope, check.scope_id, check.kind)


class _Lease:
    """What one lease call granted on each counter of a signature, and what is left of it."""

    __slots__ = (
        "admitted",
        "ahead",
        "at",
        "checks",
        "closed",
        "expires",
        "granted",
        "left",
        "started",
        "taken",
    )

    def __init__(
        self, checks: Sequence[LimitCheck], at: float, grants: Sequence[int], started: float, expires: float
    ) -> None:
        self.checks = tuple(checks)
        self.at = at  # the grant's time on the Redis clock: the bucket everything settles in
        self.granted = tuple(grants)
        self.left = list(grants)
        self.taken = [0] * len(grants)  # costs admitted (for the next lease's size)
        self.admitted = 0
        self.started = started
        self.expires = expires  # on this process's monotonic clock
        self.closed = False
        self.ahead = False  # its successor has been asked for

    def running_low(self, t: float) -> bool:
        """A busy lease near its end, by age or by what is left: time to take the next one."""
        if self.admitted < TAKE_AHEAD_AFTER:
            return False
        if t >= self.expires - (self.expires - self.started) * AHEAD_AT_AGE_LEFT:
            return True
        return any(left * 4 < granted for left, granted in zip(self.left, self.granted, strict=True))

    def fits(self, checks: Sequence[LimitCheck]) -> bool:
        mine = self.checks
        left = self.left
        for i, check in enumerate(checks):
            if left[i] < check.cost or mine[i].limit != check.limit:
                return False
        return True

    def take(self, checks: Sequence[LimitCheck]) -> None:
        for i, check in enumerate(checks):
            self.left[i] -= check.cost
            self.taken[i] += check.cost
        self.admitted += 1


class LeasedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` that admits from per-process leases on a shared Redis limiter.

    ``inner``: the Redis limiter (closed by :meth:`aclose`). ``max_age_s``: how long a lease admits
    (at most :data:`~modelyard.policy.ratelimit.MAX_LEASE_HOLD_S`). ``clock``: monotonic seconds,
    for tests. ``on_lease`` / ``on_wait``: called for each lease taken and each time a request waits
    for Redis (the gateway counts them in its metrics). Use from one event loop.
    """

    def __init__(
        self,
        inner: RedisRateLimiter,
        *,
        max_age_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_lease: Callable[[], None] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self._inner = inner
        self.window_s = inner.window_s
        self.max_age_s = min(float(max_age_s), MAX_LEASE_HOLD_S)
        self._clock = clock
        self._leases: dict[_Signature, _Lease] = {}
        self._open: dict[tuple[_Counter, float], tuple[_Lease, int]] = {}
        self._renewing: dict[_Signature, asyncio.Future[BaseException | None]] = {}
        self._per_request_until: dict[_Signature, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.leases_taken = 0
        """Leases granted so far (for tests and metrics)."""
        self.waits = 0
        """Times a request found no room in its lease and waited for Redis (for tests and metrics)."""
        self._on_lease = on_lease
        self._on_wait = on_wait

    @property
    def inner(self) -> RedisRateLimiter:
        """The shared limiter the leases come from."""
        return self._inner

    @property
    def calls(self) -> int:
        """Redis script calls made so far (for tests and metrics)."""
        return self._inner.calls

    async def ping(self) -> None:
        await self._inner.ping()

    # -- admission ---------------------------------------------------------------------------
    async def acquire(self, checks: Sequence[LimitCheck], now: float | None = None) -> Decision:
        if now is not None or not checks:
            return await self._inner.acquire(checks, now)
        signature = tuple(_counter(c) for c in checks)
        while True:
            t = self._clock()
            lease = self._leases.get(signature)
            if lease is not None and not lease.closed and t < lease.expires and lease.fits(checks):
                lease.take(checks)
                if not lease.ahead and lease.running_low(t) and signature not in self._renewing:
                    lease.ahead = True
                    done = asyncio.get_running_loop().create_future()
                    self._renewing[signature] = done  # now: no other renewal starts meanwhile
                    task = self._spawn(self._take_ahead(signature, checks, lease, t, done))
                    task.add_done_callback(partial(self._renewal_ended, signature, done))
                return Decision(True, 0.0, None, lease.at)
            self.waits += 1
            if self._on_wait is not None:
                self._on_wait()
            renewing = self._renewing.get(signature)
            if renewing is not None:
                failure = await asyncio.shield(renewing)
                if failure is not None:
                    raise RateLimitBackendError(str(failure)) from failure
                continue
            until = self._per_request_until.get(signature)
            if until is not None:
                if t < until:
                    return await self._inner.acquire(checks)
                del self._per_request_until[signature]
            return await self._renew(signature, checks, lease, t)

    async def _renew(
        self, signature: _Signature, checks: Sequence[LimitCheck], old: _Lease | None, t: float
    ) -> Decision:
        """Close ``old`` and take the next lease, admitting ``checks`` from it (one Redis call)."""
        done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._renewing[signature] = done
        failure: BaseException | None = None
        try:
            if old is not None:
                self._close(old)  # its rest rides ahead of the lease call: counted before the check
            decision, grants = await self._lease_call(checks, self._wants(checks, old, t))
        except Exception as exc:
            failure = exc
            raise
        finally:
            del self._renewing[signature]
            done.set_result(failure)
        if not decision.allowed:
            self._per_request_until[signature] = t + self.max_age_s
            return decision
        lease = _Lease(checks, decision.at, grants, t, t + self.max_age_s)
        lease.take(checks)
        self._install(signature, lease)
        return Decision(True, 0.0, None, lease.at)

    async def _take_ahead(
        self,
        signature: _Signature,
        checks: Sequence[LimitCheck],
        current: _Lease,
        t: float,
        done: asyncio.Future[BaseException | None],
    ) -> None:
        """Take a busy signature's next lease in the background, before ``current`` runs out, so no
        request waits for the Redis call; ``current`` admits until the new one is in. ``done`` is
        this renewal's entry in ``_renewing``, resolved when it ends."""
        failure: BaseException | None = None
        ahead = [replace(check, cost=0) for check in checks]  # nothing admitted with it yet
        try:
            decision, grants = await self._lease_call(ahead, self._wants(checks, current, t))
        except Exception as exc:
            failure = exc
            log.warning("could not take a rate-limit lease ahead (%s); the current one runs out first", exc)
            return
        finally:
            if not done.done():
                done.set_result(failure)
            self._renewal_ended(signature, done, None)
        if not decision.allowed or not any(grants):
            return  # the counters are at their limits: the current lease runs out as usual
        if self._leases.get(signature) is current:
            self._close(current)  # gives back what it still has
        self._install(signature, _Lease(checks, decision.at, grants, t, t + self.max_age_s))

    async def _lease_call(
        self, checks: Sequence[LimitCheck], wants: Sequence[int]
    ) -> tuple[Decision, tuple[int, ...]]:
        """One lease call; if the caller goes away (a client disconnect, shutdown) while it is under
        way, whatever it grants is given back when it lands."""
        call = asyncio.ensure_future(self._inner.lease(checks, wants, self.max_age_s))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(partial(self._give_back, checks))
            raise

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _renewal_ended(
        self, signature: _Signature, done: asyncio.Future[BaseException | None], _: object
    ) -> None:
        """Clear a take-ahead's entry even if its task was cancelled before it ran."""
        if self._renewing.get(signature) is done:
            del self._renewing[signature]
        if not done.done():
            done.set_result(None)

    def _install(self, signature: _Signature, lease: _Lease) -> None:
        self._leases[signature] = lease
        for i, check in enumerate(lease.checks):
            self._open[(_counter(check), lease.at)] = (lease, i)
        self.leases_taken += 1
        if self._on_lease is not None:
            self._on_lease()
        self._arm()

    def _wants(self, checks: Sequence[LimitCheck], old: _Lease | None, t: float) -> list[int]:
        """About twice what the previous lease used over an age, within the share of each limit."""
        requests = MIN_LEASE_REQUESTS
        if old is not None and old.admitted:
            span = max(min(t, old.expires) - old.started, self.max_age_s / 16)
            requests = max(requests, math.ceil(2 * old.admitted * self.max_age_s / span))
        requests = min(requests, MAX_LEASE_REQUESTS)
        wants: list[int] = []
        for i, check in enumerate(checks):
            per_request = check.cost
            if old is not None and old.admitted and old.checks[i].limit == check.limit:
                per_request = max(per_request, math.ceil(old.taken[i] / old.admitted))
            wants.append(max(check.cost, min(per_request * requests, check.limit // LEASE_SHARE)))
        return wants

    # -- settlement --------------------------------------------------------------------------
    async def adjust(self, check: LimitCheck, delta: int, at: float) -> None:
        if not delta:
            return
        entry = self._open.get((_counter(check), at))
        if entry is not None:
            lease, i = entry
            lease.left[i] -= delta  # back into the open lease (or an overrun taken from it)
            return
        self._inner.adjust_nowait(check, delta, at)

    def _give_back(
        self, checks: Sequence[LimitCheck], call: asyncio.Future[tuple[Decision, tuple[int, ...]]]
    ) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        decision, grants = call.result()
        if decision.allowed:
            for check, grant in zip(checks, grants, strict=True):
                self._inner.adjust_nowait(check, -grant, decision.at)

    def _close(self, lease: _Lease) -> None:
        """Give back what ``lease`` did not use (or add what its requests overran), once."""
        if lease.closed:
            return
        lease.closed = True
        for i, check in enumerate(lease.checks):
            key = (_counter(check), lease.at)
            entry = self._open.get(key)
            if entry is not None and entry[0] is lease:
                del self._open[key]
            if lease.left[i]:
                self._inner.adjust_nowait(check, -lease.left[i], lease.at)
                lease.left[i] = 0

    # -- housekeeping ------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.max_age_s / 2, self._sweep)

    def _sweep(self) -> None:
        """Close the leases past their age; forget closed ones; re-arm while any is held."""
        self._timer = None
        t = self._clock()
        forget = t - _FORGET_AFTER_AGES * self.max_age_s
        for signature, lease in list(self._leases.items()):
            if not lease.closed and t >= lease.expires:
                self._close(lease)
            elif lease.closed and lease.expires < forget:
                del self._leases[signature]
        for signature, until in list(self._per_request_until.items()):
            if until <= t:
                del self._per_request_until[signature]
        if self._leases or self._per_request_until:
            self._arm()

    def close_leases(self) -> None:
        """Close every lease now (their rest is given back with the next Redis call or flush)."""
        for lease in self._leases.values():
            self._close(lease)

    async def flush(self) -> None:
        """Close every lease and write what they give back, with any pending settlement."""
        await asyncio.gather(*self._tasks, return_exceptions=True)  # leases being taken ahead
        self.close_leases()
        await self._inner.flush()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close_leases()
        await self._inner.aclose()
