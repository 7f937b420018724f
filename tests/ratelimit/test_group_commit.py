"""The group-commit mechanics behind the Redis limiter, against a fake backend (no Redis needed):
one call in flight, the rest batched in order, deltas carried ahead of requests or sent by a timer,
failures handed to every waiter, nothing left waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from modelyard.policy._group_commit import GroupCommit


class FakeBackend:
    """Records each call; answers each request with (request, call number); can fail or stall."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[list[str], dict[str, int]]] = []
        self.fail: Exception | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, requests: Sequence[str], deltas: dict[str, int]) -> list[tuple[str, int]]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.calls.append((list(requests), dict(deltas)))
            number = len(self.calls)
            await asyncio.sleep(self.delay_s)
            if self.fail is not None:
                raise self.fail
            return [(r, number) for r in requests]
        finally:
            self.in_flight -= 1


def commit(
    backend: FakeBackend, *, max_batch: int = 128, delta_delay_s: float = 0.02
) -> GroupCommit[str, tuple[str, int], str]:
    return GroupCommit(backend.send, max_batch=max_batch, delta_delay_s=delta_delay_s)


async def test_a_lone_request_is_sent_at_once_in_the_callers_task() -> None:
    backend = FakeBackend(delay_s=0)
    batches = commit(backend)
    tasks_before = len(asyncio.all_tasks())
    for i in range(5):
        assert await batches.submit(f"r{i}") == (f"r{i}", i + 1)
        assert len(asyncio.all_tasks()) == tasks_before  # no helper task for a lone request
    assert [requests for requests, _ in backend.calls] == [[f"r{i}"] for i in range(5)]


async def test_concurrent_requests_share_calls_in_order() -> None:
    backend = FakeBackend(delay_s=0.01)
    batches = commit(backend, max_batch=128)
    results = await asyncio.gather(*(batches.submit(f"r{i}") for i in range(64)))
    assert [r for r, _ in results] == [f"r{i}" for i in range(64)]
    # The first goes alone; the 63 that queued behind it go in one call.
    assert [len(requests) for requests, _ in backend.calls] == [1, 63]
    assert [r for requests, _ in backend.calls for r in requests] == [f"r{i}" for i in range(64)]
    assert backend.most_in_flight == 1


async def test_a_batch_holds_at_most_max_batch_requests() -> None:
    backend = FakeBackend(delay_s=0.005)
    batches = commit(backend, max_batch=10)
    await asyncio.gather(*(batches.submit(f"r{i}") for i in range(31)))
    assert [len(requests) for requests, _ in backend.calls] == [1, 10, 10, 10]
    assert backend.most_in_flight == 1


async def test_deltas_are_summed_and_ride_ahead_of_the_next_request() -> None:
    backend = FakeBackend(delay_s=0)
    batches = commit(backend, delta_delay_s=10.0)
    batches.add("a", -5)
    batches.add("a", -7)
    batches.add("b", 3)
    batches.add("c", 0)  # nothing to send
    assert batches.pending_deltas == 2
    await batches.submit("r")
    assert backend.calls == [(["r"], {"a": -12, "b": 3})]
    assert batches.pending_deltas == 0


async def test_deltas_without_requests_are_sent_by_the_timer() -> None:
    backend = FakeBackend(delay_s=0)
    batches = commit(backend, delta_delay_s=0.03)
    loop = asyncio.get_running_loop()
    added = loop.time()
    batches.add("a", -5)
    while not backend.calls:
        await asyncio.sleep(0.002)
        assert loop.time() - added < 1.0, "the timer never sent the delta"
    assert backend.calls == [([], {"a": -5})]
    assert 0.025 <= loop.time() - added < 0.5


async def test_a_delta_due_while_a_call_is_in_flight_goes_right_after_it() -> None:
    backend = FakeBackend(delay_s=0.1)
    batches = commit(backend, delta_delay_s=0.01)
    request = asyncio.ensure_future(batches.submit("slow"))
    await asyncio.sleep(0)  # the request's call is in flight
    batches.add("a", -1)
    await request
    await asyncio.sleep(0.05)  # the timer (due while the call was in flight) has long fired
    assert backend.calls == [(["slow"], {}), ([], {"a": -1})]


async def test_flush_waits_for_the_call_in_flight_then_sends_the_deltas() -> None:
    backend = FakeBackend(delay_s=0.05)
    batches = commit(backend, delta_delay_s=10.0)
    request = asyncio.ensure_future(batches.submit("r"))
    await asyncio.sleep(0)
    batches.add("a", 4)
    await batches.flush()
    assert request.done()
    assert backend.calls == [(["r"], {}), ([], {"a": 4})]
    assert backend.most_in_flight == 1
    await batches.flush()  # nothing pending: no call
    assert len(backend.calls) == 2


async def test_aclose_sends_what_is_pending() -> None:
    backend = FakeBackend(delay_s=0)
    batches = commit(backend, delta_delay_s=10.0)
    batches.add("a", -3)
    await batches.aclose()
    assert backend.calls == [([], {"a": -3})]


async def test_a_failed_call_fails_every_request_in_it_with_its_own_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FakeBackend(delay_s=0.01)
    batches = commit(backend, delta_delay_s=10.0)
    first = asyncio.ensure_future(batches.submit("first"))
    await asyncio.sleep(0)
    batches.add("a", -9)
    backend.fail = ConnectionError("backend gone")
    with caplog.at_level(logging.WARNING, logger="modelyard.ratelimit"):
        results = await asyncio.wait_for(
            asyncio.gather(first, *(batches.submit(f"r{i}") for i in range(10)), return_exceptions=True),
            timeout=5,
        )
    assert all(isinstance(r, ConnectionError) and str(r) == "backend gone" for r in results)
    assert len({id(r) for r in results}) == len(results)
    assert "1 pending token settlement(s) dropped" in caplog.text
    assert batches.pending_deltas == 0
    backend.fail = None
    assert await batches.submit("after") == ("after", 3)  # it recovers


async def test_a_cancelled_waiter_is_skipped_and_the_others_still_answered() -> None:
    backend = FakeBackend(delay_s=0.02)
    batches = commit(backend)
    first = asyncio.ensure_future(batches.submit("first"))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batches.submit(f"r{i}")) for i in range(3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    await first
    assert await waiting[0] == ("r0", 2) and await waiting[2] == ("r2", 2)
    assert backend.calls[1][0] == ["r0", "r2"]


async def test_a_cancelled_leader_hands_the_queue_on() -> None:
    backend = FakeBackend(delay_s=0.05)
    batches = commit(backend)
    leader = asyncio.ensure_future(batches.submit("leader"))
    await asyncio.sleep(0)
    follower = asyncio.ensure_future(batches.submit("follower"))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await asyncio.wait_for(follower, timeout=5) == ("follower", 2)


def test_bad_settings_are_refused() -> None:
    backend = FakeBackend()
    with pytest.raises(ValueError, match="max_batch"):
        commit(backend, max_batch=0)
    with pytest.raises(ValueError, match="delta_delay_s"):
        commit(backend, delta_delay_s=-1)
