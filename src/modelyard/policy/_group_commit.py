"""Single-flight group commit: one backend call in flight; everything that arrives meanwhile goes in
the next one. Used by :class:`modelyard.policy.ratelimit.RedisRateLimiter`.

**Requests** (:meth:`GroupCommit.submit`) wait for their answer. A request that finds no call in
flight is sent at once, from the caller's own task: a lone request pays no wait and no task switch,
so at one request at a time nothing changes. Requests that arrive while a call is in flight queue;
when it ends, one background task sends them together (up to ``max_batch`` a call), in arrival
order, and keeps going while more arrive. N concurrent requests cost about one round trip each
*batch*, not each request.

**Deltas** (:meth:`GroupCommit.add`) are fire-and-forget increments, summed per key in memory. Every
call carries all the deltas pending when it starts, ahead of its requests, so a request always sees
the deltas added in this process before it. Without requests to ride along with, pending deltas
are sent by a timer ``delta_delay_s`` after the first of them (or when the call in flight at that
moment ends). So a delta reaches the backend at most ``delta_delay_s`` + two calls after it was
added. :meth:`flush` sends them now (and :meth:`aclose` does, so none is lost on a clean shutdown).

**Failures.** When a call fails, every request in it gets the error (each its own copy) and the
deltas it carried are dropped with a warning: the call may have reached the backend, and applying
them twice would be worse. Nothing waits forever: each call is bounded by the backend's own
timeout. Use from one event loop.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

log = logging.getLogger("modelyard.ratelimit")

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
KeyT = TypeVar("KeyT", bound=Hashable)

Send = Callable[[Sequence[RequestT], dict[KeyT, int]], Awaitable[Sequence[ResultT]]]
"""``send(requests, deltas)`` → one result per request, in order; raises when the call failed."""


class _Waiter(Generic[RequestT, ResultT]):
    __slots__ = ("future", "request")

    def __init__(self, request: RequestT, future: asyncio.Future[ResultT]) -> None:
        self.request = request
        self.future = future


class GroupCommit(Generic[RequestT, ResultT, KeyT]):
    """Batches ``send`` calls: one in flight; requests and deltas that arrive meanwhile ride the next.

    ``send``: the backend call (see :data:`Send`). ``max_batch``: the most requests in one call.
    ``delta_delay_s``: how long a delta may wait for a call to ride along with.
    """

    def __init__(
        self, send: Send[RequestT, KeyT, ResultT], *, max_batch: int = 128, delta_delay_s: float = 0.02
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not delta_delay_s >= 0:
            raise ValueError(f"delta_delay_s must be >= 0, got {delta_delay_s}")
        self._send = send
        self.max_batch = max_batch
        self.delta_delay_s = delta_delay_s
        self._queue: list[_Waiter[RequestT, ResultT]] = []
        self._deltas: dict[KeyT, int] = {}
        self._busy = False  # a call is in flight (from a caller, or from the drain task)
        self._drain_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deltas_due = False  # the timer fired while a call was in flight
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.calls = 0
        """Backend calls made (for tests and metrics)."""

    @property
    def pending_deltas(self) -> int:
        """The number of summed deltas not yet sent."""
        return len(self._deltas)

    async def submit(self, request: RequestT) -> ResultT:
        """Send ``request`` (with any pending deltas) and return its result; raises what ``send`` raised."""
        if self._busy:
            future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
            self._queue.append(_Waiter(request, future))
            return await future
        self._busy = True
        try:
            results = await self._call([request], self._take_deltas())
        finally:
            self._call_ended()
        return results[0]

    def add(self, key: KeyT, delta: int) -> None:
        """Add ``delta`` to ``key`` in the backend, soon (see the module docstring for the bound)."""
        if delta == 0:
            return
        deltas = self._deltas
        deltas[key] = deltas.get(key, 0) + delta
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delta_delay_s, self._on_timer)

    async def flush(self) -> None:
        """Send the pending deltas now and wait until they are written; raises what ``send`` raised."""
        while self._busy:
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(idle)
            await idle
        if not self._deltas:
            return
        self._busy = True
        try:
            await self._call([], self._take_deltas())
        finally:
            self._call_ended()

    async def aclose(self) -> None:
        """Stop the timer and send what is pending. A failure is logged, not raised: at shutdown
        there is nothing left to retry with."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self.flush()
        except Exception as exc:
            # _call has already logged how many deltas were dropped.
            log.debug("final rate-limit flush failed: %s", exc)

    # -- internals ---------------------------------------------------------------------------

    def _take_deltas(self) -> dict[KeyT, int]:
        deltas = self._deltas
        if not deltas:
            return deltas
        self._deltas = {}
        self._deltas_due = False
        return deltas

    async def _call(self, requests: Sequence[RequestT], deltas: dict[KeyT, int]) -> Sequence[ResultT]:
        self.calls += 1
        try:
            results = await self._send(requests, deltas)
        except BaseException as exc:
            if deltas:
                log.warning(
                    "rate-limit store call failed (%s): %d pending token settlement(s) dropped; the "
                    "affected TPM counters stay as reserved until their window passes",
                    type(exc).__name__,
                    len(deltas),
                )
            raise
        if len(results) != len(requests):
            raise RuntimeError(f"the backend answered {len(results)} results for {len(requests)} requests")
        return results

    def _call_ended(self) -> None:
        """After a call from a caller's task: hand what queued meanwhile to the drain task."""
        if self._queue or (self._deltas_due and self._deltas):
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
            return
        self._set_idle()

    def _set_idle(self) -> None:
        self._busy = False
        if self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._deltas:
            return  # they rode along with a call
        self._deltas_due = True
        if not self._busy:
            self._busy = True
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Send what is queued, batch after batch, until nothing is (or deltas are due)."""
        try:
            while self._queue or (self._deltas_due and self._deltas):
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                batch = [w for w in batch if not w.future.done()]  # skip the cancelled
                deltas = self._take_deltas()
                if not batch and not deltas:
                    continue
                try:
                    results = await self._call([w.request for w in batch], deltas)
                except Exception as exc:
                    for waiter in batch:
                        if not waiter.future.done():
                            waiter.future.set_exception(_copy_error(exc))
                except BaseException:
                    # Cancelled (the loop is closing): nobody may wait forever.
                    for waiter in batch:
                        waiter.future.cancel()
                    raise
                else:
                    for waiter, result in zip(batch, results, strict=True):
                        if not waiter.future.done():
                            waiter.future.set_result(result)
        except BaseException:
            for waiter in self._queue:
                waiter.future.cancel()
            self._queue.clear()
            raise
        finally:
            self._drain_task = None
            self._set_idle()


def _copy_error(exc: Exception) -> Exception:
    """One exception per waiter (raising one instance in many tasks piles up its traceback)."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its args: share it
        return exc
    clone.__cause__ = exc.__cause__
    return clone
