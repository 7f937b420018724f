"""The SQLite store's thread: calls run in order on one thread, results and errors come back to the
caller, a cancelled caller does not stop the thread, and a stopped thread refuses new work."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

from modelyard.store._thread import StoreThread


async def test_calls_run_in_order_on_one_thread_and_return_their_results() -> None:
    thread = StoreThread("test-store")
    seen: list[tuple[int, int]] = []

    def job(i: int) -> int:
        seen.append((i, threading.get_ident()))
        return i * 2

    try:
        results = await asyncio.gather(*(thread.run(functools.partial(job, i)) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    finally:
        await thread.stop()


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = StoreThread("test-store")

    def boom() -> None:
        raise ValueError("disk on fire")

    try:
        with pytest.raises(ValueError, match="disk on fire"):
            await thread.run(boom)
        assert await thread.run(lambda: 7) == 7
    finally:
        await thread.stop()


async def test_a_cancelled_caller_leaves_the_call_to_finish_and_the_thread_usable() -> None:
    thread = StoreThread("test-store")
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.1)  # the store thread, not the loop
        finished.set()

    try:
        task = asyncio.create_task(thread.run(slow))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await thread.run(lambda: "next") == "next"
        assert finished.is_set()  # the call ran to its end before the next one
    finally:
        await thread.stop()


async def test_a_stopped_thread_refuses_work_with_a_clear_error() -> None:
    thread = StoreThread("test-store")
    await thread.stop()
    with pytest.raises(RuntimeError, match=r"store\.open"):
        await thread.run(lambda: 1)
