"""RELIABILITY.md row A15 (a concurrency-1 local model behind a bounded queue) and spill-over from
a saturated local deployment to a cloud one, through the real gateway."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from tests.reliability.conftest import Rig
from tests.reliability.harness import (
    RawConnection,
    Result,
    async_client,
    chat_body,
    client_gc_paused,
    post_chat,
)


async def _released_together(client: httpx.AsyncClient, model: str, n: int, prefix: str) -> list[Result]:
    """``n`` requests on already-open connections, released by one event (a barrier)."""
    go = asyncio.Event()

    async def one(i: int) -> Result:
        await go.wait()
        return await post_chat(client, chat_body(model, f"{prefix}-{i}"))

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0.05)
    go.set()
    return await asyncio.gather(*tasks)


async def _open_connections(client: httpx.AsyncClient, n: int) -> None:
    await asyncio.gather(*(client.get("/healthz") for _ in range(n)))


async def _wave(url: str, model: str, n: int, prefix: str) -> list[Result]:
    """``n`` raw keep-alive connections, opened first, then released together by one event."""
    connections = [await RawConnection.open(url) for _ in range(n)]
    go = asyncio.Event()

    async def one(conn: RawConnection, i: int) -> Result:
        await go.wait()
        return await conn.post("/v1/chat/completions", chat_body(model, f"{prefix}-{i}"))

    tasks = [asyncio.create_task(one(c, i)) for i, c in enumerate(connections)]
    await asyncio.sleep(0.05)
    go.set()
    try:
        return await asyncio.gather(*tasks)
    finally:
        for conn in connections:
            await conn.close()


async def test_a15_local_model_concurrency_one(rig: Rig) -> None:
    """A15: a local deployment with ``max_concurrency: 1`` (queue 2 × 1, wait ≤ 1 s) in front of an
    Ollama-like upstream that serves one request at a time (150 ms each); 3 waves of 20 clients
    released together. Figures: in-flight to the upstream never > 1; queue ≤ 2 (polled from
    /admin/deployments); rejections are 503 with Retry-After within 50 ms (raw client, client GC
    paused, so the figure is the gateway's); 0 timeouts among the admitted requests."""
    n, waves = 20, 3
    label = "openai/sem1:150@a15"
    seen: list[tuple[int, int]] = []

    async def watch(client: httpx.AsyncClient) -> None:
        while True:
            state = (await client.get("/admin/deployments")).json()
            seen.extend(
                (dep["in_flight"], dep["queued"])
                for model in state["models"]
                for dep in model["deployments"]
                if dep["deployment"] == label
            )
            await asyncio.sleep(0.01)

    results: list[Result] = []
    async with async_client(rig.gateway.url, 2) as admin:
        watcher = asyncio.create_task(watch(admin))
        with client_gc_paused():
            for wave in range(waves):
                results += await _wave(rig.gateway.url, "a15", n, f"a15-{wave}")
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    queued_seen = [q for _, q in seen]
    assert seen and max(f for f, _ in seen) <= 1
    admitted = [r for r in results if r.status == 200]
    rejected = [r for r in results if r.status != 200]
    assert rig.upstream.stats("sem1:150@a15").peak == 1
    assert queued_seen and max(queued_seen) <= 2
    assert {r.status for r in rejected} == {503}
    assert all("retry-after" in r.headers for r in rejected)
    slowest_rejection = max(r.elapsed_s for r in rejected)
    assert slowest_rejection <= 0.050, [
        (round(r.elapsed_s * 1000, 1), r.headers.get("x-modelyard-overhead-ms"), round(r.started, 3))
        for r in sorted(rejected, key=lambda r: -r.elapsed_s)[:5]
    ]
    assert len(admitted) >= waves and not any(r.error for r in results)
    assert rig.upstream.stats("sem1:150@a15").completed == len(admitted)
    print(
        f"A15: {len(admitted)} admitted, {len(rejected)} rejected "
        f"(slowest {slowest_rejection * 1000:.1f} ms), "
        f"peak in-flight 1, max queued {max(queued_seen)}"
    )


async def test_spill_over_from_saturated_local_to_cloud_and_back(rig: Rig) -> None:
    """A local deployment (priority 0, ``max_concurrency: 1``, no queue) saturated by 10 clients at
    once sends the overflow to the cloud deployment (priority 1), marked ``x-modelyard-route:
    spill:saturated``; once idle, the local deployment takes traffic back (route ``primary``)."""
    async with async_client(rig.gateway.url, 10) as client:
        await _open_connections(client, 10)
        burst = await _released_together(client, "spill", 10, "spill")
        after = [await post_chat(client, chat_body("spill", f"spill-after-{i}")) for i in range(3)]
    assert {r.status for r in burst} == {200}
    by_deployment = {r.headers["x-modelyard-deployment"] for r in burst}
    assert by_deployment == {"openai/sem1:300@spill-local", "openai/ok@spill-cloud"}
    local = [r for r in burst if r.headers["x-modelyard-deployment"] == "openai/sem1:300@spill-local"]
    spilled = [r for r in burst if r.headers["x-modelyard-deployment"] == "openai/ok@spill-cloud"]
    assert len(local) == 1 and len(spilled) == 9
    assert {r.headers["x-modelyard-route"] for r in spilled} == {"spill:saturated"}
    assert local[0].headers["x-modelyard-route"] == "primary"
    assert all(r.headers["x-modelyard-deployment"] == "openai/sem1:300@spill-local" for r in after)
    assert all(r.headers["x-modelyard-route"] == "primary" for r in after)
    assert rig.upstream.stats("sem1:300@spill-local").peak == 1
    state = rig.gateway.deployments()
    assert state["openai/sem1:300@spill-local"]["in_flight"] == 0
