"""One thread that runs blocking calls for the event loop, in order: the SQLite store's writer and
reader each own one (a connection is used by one thread only).

Why not a ``ThreadPoolExecutor(1)``: ``run_in_executor`` pays a concurrent future, its callbacks
and a wrapped asyncio future per call — about 80 µs of CPU for a round trip here, against about
45 µs for this queue and one ``call_soon_threadsafe``. The reservation commit pays it on every
admitted request, so at one request at a time that difference is a fifth of the accounting budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: nobody wants the result
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StoreThread:
    """A daemon thread running the functions given to :meth:`run` one at a time, in order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the thread; the result (or exception) comes back to the caller's loop.

        Cancelling the caller does not stop ``fn`` once it started (a transaction runs to its end)."""
        if self._stopped:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future, loop = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_deliver, future, result, error)
            del job, fn, future, result, error

    async def stop(self) -> None:
        """Finish the queued calls, then end the thread (waits without blocking the loop)."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
