"""A scripted OpenAI-compatible upstream whose faults are chosen by the request's model name.

One server serves every scenario (failoverbench's "wall" design): each gateway deployment names a
different upstream model, and the model name reads ``<fault>[:<arg>...][@<tag>]``. The tag only
keeps the statistics of two deployments with the same fault apart.

==========================  ====================================================================
``ok[:n[:gap_ms]]``         n tokens (default 8); streams send one chunk per token, ``gap_ms`` apart
``fail503``                 503 always (OpenAI's overloaded body)
``flaky503:p``              503 with probability p (seeded RNG per model), else ``ok``
``once500``                 500 on the first request of each key, then ``ok`` (key = the messages)
``once429:n``               429 with ``Retry-After: n`` on the first request of each key, then ``ok``
``rate429``                 429 without ``Retry-After``, always
``ctx400`` / ``policy400``  OpenAI's exact ``context_length_exceeded`` / ``content_policy_violation``
``reset``                   the connection is closed before any header is sent
``blackhole``               accept, never answer (until the client goes away)
``slow:ms[:n]``             wait ms before the headers (non-stream) or before the first chunk (stream)
``cut:k:n``                 stream k of n token chunks, then drop the connection mid-body: no
                            ``[DONE]``, no chunked terminator (non-stream: half the JSON, then drop)
``eof:k:n``                 stream k of n token chunks, then end the body *cleanly* without ``[DONE]``
``stall:k``                 stream k chunks, then send nothing more (until the client goes away)
``malformed:k:n``           a broken event (invalid JSON) after k chunks, then the rest and ``[DONE]``
``nodone:n``                a complete stream (``finish_reason: "stop"``) that lacks ``data: [DONE]``
``sem1:ms[:n]``             an Ollama-like server: one request at a time (a semaphore), ms per answer
``switch:name``             503 while ``upstream.down[name]`` is true, else ``ok``
``big:n:size``              a stream of n chunks of ``size`` characters each, written as fast as the
                            client takes them
==========================  ====================================================================

Per model it records attempts, arrival times (with the request key), peak concurrency (requests
in its handler at once) and the times at which clients closed their connection before the answer
ended (cancellation propagation). Everything binds 127.0.0.1 on a random port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.reliability.harness import BackgroundLoop

CONTEXT_LENGTH_ERROR = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 131072 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
CONTENT_POLICY_ERROR = {
    "error": {
        "message": "Your request was rejected as a result of our safety system. Your prompt may contain "
        "text that is not allowed by our safety system.",
        "type": "invalid_request_error",
        "param": None,
        "code": "content_policy_violation",
    }
}
OVERLOADED_503 = {
    "error": {
        "message": "The engine is currently overloaded, please try again later.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
SERVER_ERROR_500 = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
RATE_LIMIT_429 = {
    "error": {
        "message": "Rate limit reached for requests. Please try again later.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def token(i: int) -> str:
    return f"t{i} "


def expected_text(n: int) -> str:
    """The whole answer of ``ok:n``: what a client must reassemble, byte for byte."""
    return "".join(token(i) for i in range(n))


@dataclass
class ModelStats:
    """What one upstream model saw. Times are ``time.monotonic()`` of the test process."""

    attempts: int = 0
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    completed: int = 0
    """Answers (not errors) sent to the end."""
    closes: list[tuple[float, str]] = field(default_factory=list)
    """When (and for which key) a client went away before the answer was complete."""
    ends: list[tuple[float, str]] = field(default_factory=list)
    """When the last byte of an answer was written (or the connection deliberately dropped)."""

    def arrivals_of(self, key: str) -> list[float]:
        return [t for t, k in self.arrivals if k == key]

    def closes_of(self, key: str) -> list[float]:
        return [t for t, k in self.closes if k == key]

    def ends_of(self, key: str) -> list[float]:
        return [t for t, k in self.ends if k == key]


class FaultUpstream:
    """Start with :meth:`start`; ``base_url`` (ending in ``/v1``) goes into deployments."""

    def __init__(self, loop: BackgroundLoop, *, seed: int = 20240601) -> None:
        self._loop = loop
        self._seed = seed
        self._lock = threading.Lock()
        self._stats: dict[str, ModelStats] = {}
        self._rngs: dict[str, random.Random] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self.down: dict[str, bool] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultUpstream:
        self._loop.call(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # handler_cancellation: a client that goes away cancels its handler, which records when.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.call(self._runner.cleanup())

    # -- what was seen ---------------------------------------------------------------------------
    def stats(self, model: str) -> ModelStats:
        with self._lock:
            return self._stats.setdefault(model, ModelStats())

    def attempts(self, model: str) -> int:
        return self.stats(model).attempts

    # -- serving ---------------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model = str(body.get("model", ""))
        key = orjson.dumps(body.get("messages")).decode()
        stats = self.stats(model)
        with self._lock:
            stats.attempts += 1
            stats.arrivals.append((time.monotonic(), key))
            stats.in_flight += 1
            stats.peak = max(stats.peak, stats.in_flight)
            seen = self._seen[(model, key)] = self._seen.get((model, key), 0) + 1
        try:
            response = await self._serve(request, body, model, key, seen)
            with self._lock:
                stats.completed += response.status < 400
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            with self._lock:
                stats.closes.append((time.monotonic(), key))
            raise
        finally:
            with self._lock:
                stats.in_flight -= 1

    async def _serve(
        self, request: web.Request, body: dict[str, Any], model: str, key: str, seen: int
    ) -> web.StreamResponse:
        fault, *args = model.split("@", 1)[0].split(":")
        stream = bool(body.get("stream"))
        stats = self.stats(model)
        if fault == "ok":
            n, gap = int(args[0]) if args else 8, float(args[1]) / 1000 if len(args) > 1 else 0.0
            return await self._answer(request, body, model, key, n, gap)
        if fault == "fail503" or (fault == "switch" and self.down.get(args[0], False)):
            return _error(503, OVERLOADED_503)
        if fault == "switch":
            return await self._answer(request, body, model, key, 8)
        if fault == "flaky503":
            with self._lock:
                rng = self._rngs.setdefault(model, random.Random(f"{self._seed}:{model}"))
                failing = rng.random() < float(args[0])
            return (
                _error(503, OVERLOADED_503) if failing else await self._answer(request, body, model, key, 8)
            )
        if fault == "once500":
            return (
                _error(500, SERVER_ERROR_500)
                if seen == 1
                else await self._answer(request, body, model, key, 8)
            )
        if fault == "once429":
            if seen == 1:
                return _error(429, RATE_LIMIT_429, {"retry-after": args[0]})
            return await self._answer(request, body, model, key, 8)
        if fault == "rate429":
            return _error(429, RATE_LIMIT_429)
        if fault == "ctx400":
            return _error(400, CONTEXT_LENGTH_ERROR)
        if fault == "policy400":
            return _error(400, CONTENT_POLICY_ERROR)
        if fault in ("reset", "blackhole"):
            if fault == "reset":
                _drop(request)
            await asyncio.sleep(3600)  # ended by the client closing (handler cancellation)
        if fault == "slow":
            delay, n = float(args[0]) / 1000, int(args[1]) if len(args) > 1 else 8
            if not stream:
                await asyncio.sleep(delay)
                return await self._answer(request, body, model, key, n)
            return await self._answer(request, body, model, key, n, first_delay=delay)
        if fault in ("cut", "eof"):
            k, n = int(args[0]), int(args[1])
            if not stream and fault == "cut":
                return await self._cut_json(request, stats, key)
            return await self._answer(request, body, model, key, n, stop_after=k, drop=fault == "cut")
        if fault == "stall":
            return await self._answer(request, body, model, key, 10_000, stop_after=int(args[0]), stall=True)
        if fault == "malformed":
            return await self._answer(request, body, model, key, int(args[1]), malformed_at=int(args[0]))
        if fault == "nodone":
            return await self._answer(request, body, model, key, int(args[0]), done=False)
        if fault == "sem1":
            semaphore = self._semaphores.setdefault(model, asyncio.Semaphore(1))
            async with semaphore:
                await asyncio.sleep(float(args[0]) / 1000)
                return await self._answer(request, body, model, key, int(args[1]) if len(args) > 1 else 8)
        if fault == "big":
            n, size = int(args[0]), int(args[1])
            return await self._answer(request, body, model, key, n, piece="x" * size)
        return _error(404, {"error": {"message": f"no fault {fault!r}", "type": "invalid_request_error"}})

    async def _answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        model: str,
        key: str,
        n: int,
        gap: float = 0.0,
        *,
        first_delay: float = 0.0,
        stop_after: int | None = None,
        drop: bool = False,
        stall: bool = False,
        malformed_at: int | None = None,
        done: bool = True,
        piece: str | None = None,
    ) -> web.StreamResponse:
        stats = self.stats(model)
        if not body.get("stream"):
            text = expected_text(n) if piece is None else piece * n
            response = web.json_response(completion(model, text, n), dumps=lambda o: orjson.dumps(o).decode())
            stats.ends.append((time.monotonic(), key))
            return response
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        if first_delay:
            await asyncio.sleep(first_delay)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for i in range(n):
            if stop_after is not None and i == stop_after:
                if stall:
                    await asyncio.sleep(3600)
                if drop:
                    stats.ends.append((time.monotonic(), key))
                    _drop(request, reset=False)
                    await asyncio.sleep(3600)
                await response.write_eof()  # a clean end of the body, but no finish and no [DONE]
                stats.ends.append((time.monotonic(), key))
                return response
            if malformed_at is not None and i == malformed_at:
                await response.write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
            content = token(i) if piece is None else piece
            await response.write(
                _event(
                    chunk(
                        model, {"role": "assistant", "content": content} if i == 0 else {"content": content}
                    )
                )
            )
            if gap:
                await asyncio.sleep(gap)
        await response.write(_event(chunk(model, {}, "stop")))
        if include_usage:
            usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
            await response.write(_event({**chunk(model, {}), "choices": [], "usage": usage}))
        if done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        stats.ends.append((time.monotonic(), key))
        return response

    async def _cut_json(self, request: web.Request, stats: ModelStats, key: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [')
        stats.ends.append((time.monotonic(), key))
        _drop(request, reset=False)
        await asyncio.sleep(3600)
        return response


def completion(model: str, text: str, n: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n},
    }


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
    )


def _drop(request: web.Request, *, reset: bool = True) -> None:
    """End the connection without finishing the body: with a TCP reset (SO_LINGER 0, unsent bytes
    discarded), or with ``reset=False`` after flushing what was written (FIN, no chunked terminator)."""
    transport = request.transport
    if transport is None:
        return
    if not reset:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.contextmanager
def upstream_running(loop: BackgroundLoop) -> Iterator[FaultUpstream]:
    upstream = FaultUpstream(loop).start()
    try:
        yield upstream
    finally:
        upstream.stop()
