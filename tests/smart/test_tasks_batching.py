"""Concurrent decisions share embedding runs: prompts arriving while one batch is embedded go
together in the next; failures reach every caller of the batch; a cancelled caller harms no one."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.routing.smart.batching import EmbeddingBatcher


def test_concurrent_prompts_are_embedded_in_few_batches() -> None:
    calls: list[list[str]] = []

    async def encode(texts: list[str]) -> list[str]:
        calls.append(texts)
        await asyncio.sleep(0.01)
        return [t.upper() for t in texts]

    async def run() -> list[str]:
        batcher = EmbeddingBatcher(encode, max_batch=4)
        return await asyncio.gather(*(batcher.embed(f"p{i}") for i in range(10)))

    assert asyncio.run(run()) == [f"P{i}" for i in range(10)]
    assert [len(c) for c in calls] == [4, 4, 2]  # not ten runs of one


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    async def encode(texts: list[str]) -> list[str]:
        await asyncio.sleep(0)
        if "bad" in texts:
            raise RuntimeError("model not loaded")
        return texts

    async def run() -> None:
        batcher = EmbeddingBatcher(encode, max_batch=2)
        results = await asyncio.gather(
            batcher.embed("bad"), batcher.embed("x"), batcher.embed("ok"), return_exceptions=True
        )
        assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
        assert results[2] == "ok"

    asyncio.run(run())


def test_a_cancelled_caller_does_not_hurt_the_others() -> None:
    async def encode(texts: list[str]) -> list[str]:
        await asyncio.sleep(0.01)
        return texts

    async def run() -> None:
        batcher = EmbeddingBatcher(encode)
        first = asyncio.create_task(batcher.embed("a"))
        await asyncio.sleep(0)
        gone = asyncio.create_task(batcher.embed("b"))
        third = asyncio.create_task(batcher.embed("c"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == "a" and await third == "c"
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(run())
