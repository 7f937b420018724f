"""Admission control: concurrency slots, the bounded FIFO queue and fast rejection."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelyard.routing.deployment import Saturated
from tests.unit.routing.test_blocks import make_state


async def test_never_more_than_the_limit_in_flight_and_fast_rejection() -> None:
    dep = make_state("local", max_concurrency=1, max_queue=2, max_queue_wait_s=5.0)
    peak = 0
    rejected: list[float] = []
    served = 0

    async def client() -> None:
        nonlocal peak, served
        started = time.perf_counter()
        try:
            await dep.acquire(5.0)
        except Saturated:
            rejected.append(time.perf_counter() - started)
            return
        try:
            peak = max(peak, dep.in_flight)
            await asyncio.sleep(0.02)
            served += 1
        finally:
            dep.release()

    await asyncio.gather(*(client() for _ in range(20)))
    assert peak == 1
    assert served == 3  # one running + a queue of two
    assert len(rejected) == 17 and max(rejected) < 0.05
    assert dep.in_flight == 0 and dep.queued == 0


async def test_queue_wait_is_bounded_and_fifo() -> None:
    dep = make_state("local", max_concurrency=1, max_queue=5)
    await dep.acquire(1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        await dep.acquire(1.0)
        order.append(i)
        dep.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert dep.queued == 3
    dep.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and dep.in_flight == 0

    await dep.acquire(1)
    started = time.perf_counter()
    with pytest.raises(Saturated, match="waited"):
        await dep.acquire(0.05)
    assert 0.04 < time.perf_counter() - started < 0.5
    dep.release()
    assert dep.in_flight == 0 and dep.queued == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    dep = make_state("local", max_concurrency=1, max_queue=5)
    await dep.acquire(1)
    task = asyncio.create_task(dep.acquire(5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    dep.release()
    assert dep.in_flight == 0 and dep.queued == 0
    await dep.acquire(0)
    assert dep.in_flight == 1
