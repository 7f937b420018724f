"""What the reliability tests share: a background event loop for the fakes, a real gateway process
whose file descriptors, memory and CPU can be read from ``/proc``, and small load helpers.

The gateway is the production one (``python -m modelyard serve``, uvloop + httptools) in its own
process, so what the tests count (fds, RSS, CPU) is the gateway's alone; the fake upstream and the
fault proxies run on one event loop in a background thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

T = TypeVar("T")
CLEARED_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MODELYARD_CONFIG", "MODELYARD_MASTER_KEY")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BackgroundLoop:
    """An asyncio loop in a daemon thread; fakes are started on it with :meth:`call`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def client_gc_paused() -> Iterator[None]:
    """Pause this (client) process's cyclic GC while a latency is measured: a gen-2 pass over the
    results of earlier tests can take tens of ms and would be blamed on the gateway."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    """A running gateway process: its URL and what /proc says about it."""

    url: str
    pid: int
    log: Path

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far (fields 14 and 15 of /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def connections_to(self, port: int) -> int:
        """Open TCP connections of the gateway whose remote port is ``port`` (from /proc/net/tcp)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                link = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        count = 0
        for line in Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] != "0A":  # 0A: listening
                count += 1
        return count

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def deployments(self) -> dict[str, dict[str, Any]]:
        """GET /admin/deployments, flattened to ``{deployment label: state}``."""
        data = httpx.get(self.url + "/admin/deployments", timeout=5).json()
        return {d["deployment"]: d for m in data["models"] for d in m["deployments"]}

    def quiet_fds(self, within_s: float = 3.0) -> int:
        """The fd count once it has not changed for 0.3 s: a baseline after earlier clients'
        connections have been closed on the gateway's side too."""
        deadline = time.monotonic() + within_s
        counts = [self.fds()]
        while time.monotonic() < deadline and (len(counts) < 4 or len(set(counts[-4:])) > 1):
            time.sleep(0.1)
            counts.append(self.fds())
        return counts[-1]

    def settle_fds(self, baseline: int, slack: int = 5, within_s: float = 5.0) -> int:
        """The fd count once it is at most ``baseline + slack`` (or the last seen after ``within_s``).
        Fewer than the baseline is fine: idle pooled upstream connections expire meanwhile."""
        deadline = time.monotonic() + within_s
        count = self.fds()
        while count > baseline + slack and time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.fds()
        return count


@contextmanager
def run_gateway(workdir: Path, config_text: str) -> Iterator[Gateway]:
    """``python -m modelyard serve`` on a free loopback port until the block ends."""
    port = free_port()
    config = workdir / "modelyard.yaml"
    config.write_text(config_text)
    args = [
        sys.executable,
        "-m",
        "modelyard",
        "serve",
        "--port",
        str(port),
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield Gateway(url, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- config ------------------------------------------------------------------------------------------
def deployment(base_url: str, model: str, **fields: Any) -> dict[str, Any]:
    """An OpenAI-compatible deployment of the fault upstream (``model`` picks the fault)."""
    return {"provider": "openai", "model": model, "base_url": base_url, **fields}


def model_entry(name: str, deployments: Sequence[dict[str, Any]], **routing: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "deployments": list(deployments)}
    if routing:
        entry["routing"] = routing
    return entry


def config_yaml(models: Sequence[dict[str, Any]], **server: Any) -> str:
    """The gateway config as YAML (JSON is YAML): no master key, no embedded or env models."""
    return orjson.dumps(
        {
            "server": {"connect_timeout_s": 1, "request_timeout_s": 30, **server},
            "embedded_models": False,
            "cloud_models_from_env": False,
            "models": list(models),
        },
        option=orjson.OPT_INDENT_2,
    ).decode()


# -- clients -----------------------------------------------------------------------------------------
def chat_body(model: str, text: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}


@dataclass
class Result:
    """One request as the client saw it."""

    status: int
    elapsed_s: float
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    started: float = 0.0
    """``time.monotonic()`` when the request was sent."""

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def attempts(self) -> int:
        return int(self.headers.get("x-modelyard-attempts", "0"))


async def post_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> Result:
    started = time.monotonic()
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Result(0, time.monotonic() - started, error=repr(exc), started=started)
    elapsed = time.monotonic() - started
    return Result(response.status_code, elapsed, dict(response.headers), response.content, started=started)


async def paced(client: httpx.AsyncClient, model: str, rate: float, n: int, prefix: str) -> list[Result]:
    """``n`` requests at a steady ``rate`` per second (open loop: a slow answer delays nothing)."""
    begin = time.monotonic()

    async def at(i: int) -> Result:
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        return await post_chat(client, chat_body(model, f"{prefix}-{i}"))

    return await asyncio.gather(*(at(i) for i in range(n)))


async def eventually(predicate: Callable[[], bool], within_s: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``within_s`` passes (the fakes run on another thread)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def key_of(text: str) -> str:
    """The fake upstream's per-request key for a one-message request of ``text``."""
    return orjson.dumps([{"role": "user", "content": text}]).decode()


async def bounded(concurrency: int, jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Await ``jobs`` with at most ``concurrency`` running at once, results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


def async_client(url: str, concurrency: int = 64, timeout: float = 30) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sse_data(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines))
    return out


class RawConnection:
    """A keep-alive HTTP/1.1 connection with next to no client overhead, for latency figures that
    must measure the gateway rather than the Python HTTP client (e.g. A15's 50 ms rejections)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader, self._writer, self._host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host_port = url.removeprefix("http://")
        host, port = host_port.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, host_port)

    async def post(self, path: str, payload: dict[str, Any]) -> Result:
        data = orjson.dumps(payload)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self._host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode()
        started = time.monotonic()
        self._writer.write(head + data)
        status_line = await self._reader.readuntil(b"\r\n")
        headers: dict[str, str] = {}
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            await self._reader.readuntil(b"\r\n")  # the end of the (empty) trailer section
            body = b"".join(parts)
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        status = int(status_line.split()[1])
        return Result(status, time.monotonic() - started, headers, body, started=started)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def raw_load(url: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> list[Result]:
    """POST every body to /v1/chat/completions over ``concurrency`` keep-alive raw connections;
    results in the order of ``bodies``."""
    results: list[Result | None] = [None] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)

    async def worker() -> None:
        conn = await RawConnection.open(url)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                results[i] = await conn.post("/v1/chat/completions", bodies[i])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]
