"""RELIABILITY.md rows B1 (client disconnects mid-stream), B3 (slow readers) and B5 (fallback
accounting), through the real gateway.

Ledger parts are pending the ledger issue: B1's "1,000 disconnects give 1,000 rows, 0 rows with
zero tokens after ≥ 1 chunk" and B5's "completion cost attributed only to the serving model".
Here: cancellation as the upstream sees it, fds, memory, and what the response names.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from dataclasses import dataclass

import httpx
import orjson
import pytest

from tests.reliability.conftest import Rig
from tests.reliability.fault_upstream import FaultUpstream
from tests.reliability.harness import (
    Gateway,
    Result,
    async_client,
    bounded,
    chat_body,
    client_gc_paused,
    config_yaml,
    deployment,
    eventually,
    key_of,
    model_entry,
    percentile,
    post_chat,
    run_gateway,
    sse_data,
)


async def _read_then_leave(client: httpx.AsyncClient, model: str, text: str, k: int) -> float:
    """Stream, read ``k`` events, then close the connection; returns when it was closed."""
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat_body(model, text, stream=True)
    ) as response:
        assert response.status_code == 200
        seen = b""
        async for raw in response.aiter_raw():
            seen += raw
            if seen.count(b"\n\n") >= k:
                break
    return time.monotonic()


async def test_b1_disconnect_cancels_the_upstream(rig: Rig) -> None:
    """B1, scaled: 200 clients (RELIABILITY.md: 1,000), 32 at a time, each reading 1-10 random
    events (seeded) of a 100-chunk stream (one chunk per 20 ms) and then closing. Figures: the
    upstream sees every close ≤ 1 s after the client's; gateway fds back to baseline (+5)."""
    n = 200
    rng = random.Random(7)
    ks = [rng.randint(1, 10) for _ in range(n)]
    baseline = rig.gateway.quiet_fds()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=rig.gateway.url, limits=limits, timeout=10) as client:
        closed = await bounded(32, [_read_then_leave(client, "b1", f"b1-{i}", ks[i]) for i in range(n)])
    stats = rig.upstream.stats("ok:100:20@b1")
    assert await eventually(lambda: len(stats.closes) == n and stats.in_flight == 0, 3)
    lags = [stats.closes_of(key_of(f"b1-{i}"))[0] - closed[i] for i in range(n)]
    assert max(lags) <= 1.0, max(lags)
    assert stats.completed == 0
    fds = rig.gateway.settle_fds(baseline)
    assert fds <= baseline + 5, (baseline, fds)
    print(
        f"B1: {n} disconnects, upstream saw each close ≤ {max(lags) * 1000:.0f} ms later, "
        f"fds {baseline}->{fds}"
    )


async def test_b1_disconnect_while_upstream_is_silent(rig: Rig) -> None:
    """B1 when the upstream pauses (a slow local model, a reasoning pause): 5 clients read the
    3 chunks sent, then close. The upstream must see the close ≤ 1 s later, not after 30 s."""
    async with httpx.AsyncClient(base_url=rig.gateway.url, timeout=10) as client:
        closed = await asyncio.gather(
            *(_read_then_leave(client, "b1-stall", f"b1s-{i}", 3) for i in range(5))
        )
    stats = rig.upstream.stats("stall:3@b1s")
    assert await eventually(lambda: len(stats.closes) == 5, 1.5)
    assert max(stats.closes_of(key_of(f"b1s-{i}"))[0] - closed[i] for i in range(5)) <= 1.0


B3_STREAM = "big:300:16000@b3"
"""4.8 MB per stream in 16 KB events: more than the ~3 MB a loopback socket's send buffer absorbs
(tcp_wmem max 4 MiB), so the gateway itself must hold the upstream back."""


async def _slow_reader(url: str, stop: asyncio.Event, per_second: int) -> int:
    """A raw client with a 4 KiB receive buffer that reads ``per_second`` bytes a second."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    body = orjson.dumps(chat_body("b3", "slow reader", stream=True))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):  # the kernel may hold back a tiny window update
            received += len(await asyncio.wait_for(reader.read(per_second), 1.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    writer.close()
    return received


@dataclass
class SlowReaders:
    readers: int
    rss_growth: int
    steady_after_s: float
    """When the gateway's RSS stopped growing: the kernel buffers are full and backpressure holds."""
    received: list[int]
    probes: list[Result]
    """Requests of another client sent every 50 ms once steady."""
    upstream_done: int


async def _slow_readers_run(gateway: Gateway, upstream: FaultUpstream, n: int) -> SlowReaders:
    stop, steady = asyncio.Event(), asyncio.Event()
    probes: list[Result] = []
    steady_at: list[float] = []
    async with async_client(gateway.url, 2) as client:
        await post_chat(client, chat_body("b3-probe", "warm"))  # the probe's connection, opened early
        rss_before = gateway.rss_bytes()
        samples = [rss_before]
        started = time.monotonic()

        async def probe() -> None:
            await steady.wait()
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                # /healthz touches no upstream: its latency is the gateway's event loop alone
                # (the fake upstream shares this process and would add its own noise).
                sent = time.monotonic()
                response = await client.get("/healthz")
                probes.append(Result(response.status_code, time.monotonic() - sent, dict(response.headers)))
                await asyncio.sleep(0.05)
            stop.set()

        cpu = [gateway.cpu_s()]

        async def watch_rss() -> None:
            while not stop.is_set():
                samples.append(gateway.rss_bytes())
                cpu.append(gateway.cpu_s())
                # Steady: RSS flat (±1 MiB) and the gateway under half a core, over the last 0.5 s.
                flat = len(samples) > 6 and max(samples[-6:]) - min(samples[-6:]) < 2**20
                calm = len(cpu) > 6 and cpu[-1] - cpu[-6] < 0.25
                if not steady.is_set() and ((flat and calm) or time.monotonic() - started > 7):
                    steady_at.append(time.monotonic() - started)
                    steady.set()
                await asyncio.sleep(0.1)

        readers = asyncio.gather(*(_slow_reader(gateway.url, stop, 1024) for _ in range(n)))
        with client_gc_paused():
            received, *_ = await asyncio.gather(readers, probe(), watch_rss())
    done = upstream.stats(B3_STREAM).completed
    return SlowReaders(n, max(samples) - rss_before, steady_at[0], received, probes, done)


@pytest.fixture(scope="module")
def slow_readers(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> SlowReaders:
    """B3's run, once, on a fresh gateway of its own (so earlier tests' heap does not hide growth)."""
    up = rig.upstream.base_url
    text = config_yaml(
        [
            model_entry("b3", [deployment(up, B3_STREAM)]),
            model_entry("b3-probe", [deployment(up, "ok@b3-probe")]),
        ]
    )
    with run_gateway(tmp_path_factory.mktemp("b3"), text) as gateway:
        return asyncio.run(_slow_readers_run(gateway, rig.upstream, 100))


def test_b3_slow_readers_get_backpressure(slow_readers: SlowReaders) -> None:
    """B3: 100 clients read a 4.8 MB stream at 1 KB/s. Figures: the per-stream buffer is bounded
    (RSS growth ≤ 1 MiB per stream, and it stops growing: ≤ 6 s to a plateau where RSS is flat
    and the gateway uses < 50 % of a core); other clients' requests, one every 50 ms for 1 s once
    the plateau is reached, never take > 100 ms (no
    event-loop lag). Before the plateau the kernel's send and receive buffers on both sides of the
    gateway (MiBs each on loopback) fill with hundreds of MB that the fake upstream (same 2-core
    box) produces and the gateway relays; that phase is not part of the lag figure."""
    run = slow_readers
    assert min(run.received) > 0
    assert run.steady_after_s <= 6, run.steady_after_s
    assert run.rss_growth <= run.readers * 2**20, run.rss_growth / 2**20
    assert {p.status for p in run.probes} == {200} and len(run.probes) >= 10
    worst = max(p.elapsed_s for p in run.probes)
    assert worst <= 0.100, sorted(round(p.elapsed_s * 1000) for p in run.probes)
    print(
        f"B3: {run.readers} slow readers, RSS +{run.rss_growth / 2**20:.1f} MiB (steady after "
        f"{run.steady_after_s:.1f}s), "
        f"probe p50 {percentile([p.elapsed_s for p in run.probes], 0.5) * 1000:.1f} ms"
        f" / max {worst * 1000:.1f} ms"
    )


def test_b3_rss_growth_within_50_mib(slow_readers: SlowReaders) -> None:
    """B3's figure: RSS growth ≤ 50 MiB with 100 slow readers."""
    assert slow_readers.rss_growth <= 50 * 2**20


async def test_b5_the_response_names_the_model_that_served(rig: Rig) -> None:
    """B5 (S16): the primary model always 503s, its fallback model serves. 100 requests, half
    streaming. Figures: 100/100 carry ``model`` = the fallback's model (every chunk of a stream
    too), ``x-modelyard-route: fallback:b5-fb`` and the fallback deployment; the failed attempt is
    counted as an attempt (``x-modelyard-attempts`` = upstream attempts), not as a completion."""
    n = 100
    async with async_client(rig.gateway.url, 32) as client:
        jobs = [post_chat(client, chat_body("b5", f"b5-{i}", stream=i % 2 == 1)) for i in range(n)]
        results = await bounded(32, jobs)
    assert [r.status for r in results].count(200) == n
    assert {r.headers["x-modelyard-route"] for r in results} == {"fallback:b5-fb"}
    assert {r.headers["x-modelyard-deployment"] for r in results} == {"openai/ok@b5-fb"}
    for r in results:
        if r.headers["content-type"].startswith("text/event-stream"):
            chunks = [orjson.loads(e) for e in sse_data(r.body) if e != b"[DONE]"]
            assert {c["model"] for c in chunks} == {"ok@b5-fb"}
        else:
            assert r.json["model"] == "ok@b5-fb"
            assert r.json["usage"]["completion_tokens"] == 8
    primary, fallback = rig.upstream.stats("fail503@b5"), rig.upstream.stats("ok@b5-fb")
    assert fallback.completed == n and primary.completed == 0
    assert sum(r.attempts for r in results) == primary.attempts + fallback.attempts
