"""Child-process bodies for the multi-process and crash tests (started with the spawn method).

Each opens its own store on the test's database, like a separate gateway process would.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any, TextIO

from modelyard.store.base import Denied, Scope, Store
from tests.store._support import CENT, Backend, reservation, settlement


async def barrier_race(store: Store, budgets: tuple[tuple[Scope, str], ...], clients: int, tag: str) -> int:
    """C1's load: ``clients`` tasks released together, each reserving and settling at the maximum
    cost until refused. Returns how many were admitted."""
    go = asyncio.Event()
    counter = itertools.count()

    async def client() -> int:
        await go.wait()
        admitted = 0
        while True:
            request_id = f"{tag}-{next(counter)}"
            if isinstance(await store.reserve(reservation(request_id, CENT, budgets)), Denied):
                return admitted
            admitted += 1
            await store.settle(settlement(request_id, CENT))

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(0)  # every client is now waiting at the barrier
    go.set()
    total = sum(await asyncio.gather(*tasks))
    await store.flush()
    return total


def race_child(backend: Backend, reps: int, clients: int, barrier: Any, results: Any, name: str) -> None:
    """C2: run ``reps`` barrier races, meeting the other process at ``barrier`` before each."""

    async def main() -> list[int]:
        store = await backend.open()
        admitted = []
        try:
            for rep in range(reps):
                await asyncio.to_thread(barrier.wait)
                budgets = ((Scope.KEY, f"c2-{rep}"),)
                admitted.append(await barrier_race(store, budgets, clients, f"{name}-{rep}"))
        finally:
            await store.aclose()
        return admitted

    results.put((name, asyncio.run(main())))


def contend_child(backend: Backend, count: int, concurrency: int, results: Any, name: str) -> None:
    """D4: ``count`` reserve+settle cycles with ``concurrency`` tasks; reports any error."""

    async def main() -> list[str]:
        store = await backend.open()
        errors: list[str] = []
        ids = iter(range(count))

        async def worker() -> None:
            for i in ids:
                request_id = f"{name}-{i}"
                try:
                    assert (
                        await store.reserve(reservation(request_id, 2 * CENT, ((Scope.KEY, "d4"),))) is None
                    )
                    await store.settle(settlement(request_id, CENT + i % 7))
                except Exception as exc:
                    errors.append(repr(exc))

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await store.aclose()
        return errors

    results.put((name, asyncio.run(main())))


def settle_until_killed(backend: Backend, count: int, concurrency: int, ack_path: str) -> None:
    """D1: reserve, settle and flush ``count`` requests; append each to ``ack_path`` only after
    ``flush()`` acknowledged it. The parent SIGKILLs this process at a random moment."""

    async def main(acks: TextIO) -> None:
        store = await backend.open()
        ids = iter(range(count))

        async def worker() -> None:
            for i in ids:
                request_id = f"d1-{time.time_ns()}-{i}"
                cost = 1 + (i * 7919) % CENT
                assert await store.reserve(reservation(request_id, CENT, ((Scope.KEY, "d1"),))) is None
                await store.settle(settlement(request_id, cost, key_id="d1"))
                await store.flush()
                acks.write(f"{request_id} {cost}\n")  # line-buffered: in the OS before the next step

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await store.aclose()

    with open(ack_path, "a", buffering=1) as acks:
        asyncio.run(main(acks))


def reserve_then_hang(backend: Backend, count: int, ack_path: str, deadline_at: float) -> None:
    """D2: make ``count`` reservations (recording each acknowledged one), then wait to be killed."""

    async def main(acks: TextIO) -> None:
        store = await backend.open()

        async def one(i: int) -> None:
            request_id = f"d2-{i}"
            r = reservation(request_id, 3 * CENT, ((Scope.KEY, "d2"),), deadline_at=deadline_at)
            assert await store.reserve(r) is None
            acks.write(f"{request_id}\n")

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(3600)

    with open(ack_path, "a", buffering=1) as acks:
        asyncio.run(main(acks))


def leased_race_child(
    backend: Backend, journal_dir: str, reps: int, clients: int, barrier: Any, results: Any, name: str
) -> None:
    """C2 with ``storage.reservations: leased``: this process admits from its own leases."""
    from modelyard.policy.leases import LeasedReservations

    async def main() -> list[int]:
        store = await backend.open()
        leases = LeasedReservations(store, Path(journal_dir))
        leases.start()
        admitted = []
        try:
            for rep in range(reps):
                await asyncio.to_thread(barrier.wait)
                budgets = ((Scope.KEY, f"c2l-{rep}"),)
                admitted.append(await barrier_race(leases, budgets, clients, f"{name}-{rep}"))  # type: ignore[arg-type]
        finally:
            await leases.aclose()
            await store.aclose()
        return admitted

    results.put((name, asyncio.run(main())))


def lease_then_hang(backend: Backend, journal_dir: str, ack_path: str, admitted: int, finished: int) -> None:
    """D2 with leases: admit ``admitted`` requests from leases, finish the first ``finished`` of them
    at a quarter of their maximum, acknowledge, then wait to be killed."""
    from modelyard.policy.leases import LeasedReservations

    async def main(acks: TextIO) -> None:
        store = await backend.open()
        leases = LeasedReservations(store, Path(journal_dir), max_age_s=60)
        leases.start()
        budgets = ((Scope.KEY, "d2l"),)
        deadline = time.time() + 1.0
        for i in range(admitted):
            r = reservation(f"d2l-{i}", CENT, budgets, created_at=time.time(), deadline_at=deadline)
            assert await leases.reserve(r) is None
        for i in range(finished):
            await leases.settle(settlement(f"d2l-{i}", CENT // 4, key_id="k1"))
        acks.write("ready\n")
        await asyncio.sleep(3600)

    with open(ack_path, "a", buffering=1) as acks:
        asyncio.run(main(acks))


async def race_in_two_processes(target: Any, *args: Any) -> dict[str, list[int]]:
    """Run ``target(*args, barrier, results, name)`` in two spawned processes, ``p1`` and ``p2``;
    returns each one's admitted counts per repetition."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=target, args=(*args, barrier, results, name)) for name in ("p1", "p2")]
    for child in children:
        child.start()
    try:
        return dict(await asyncio.to_thread(lambda: [results.get(timeout=120) for _ in children]))
    finally:
        for child in children:
            await asyncio.to_thread(child.join, 30)
