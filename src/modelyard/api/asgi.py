"""A minimal pure-ASGI toolkit: the request we hand to routes, and the ways to answer.

Kept tiny on purpose: this is the hot path, and every microsecond here is gateway overhead.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from modelyard.errors import InvalidRequestError, RequestTooLargeError
from modelyard.routing.usage import Usage

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Dialect(StrEnum):
    """Whose error shape and headers a route answers in."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    PLAIN = "plain"


class RequestIds:
    """Unique request ids, cheaply: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + os.urandom(6).hex()
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:012x}"


@dataclass(slots=True)
class RequestContext:
    """One request's facts: its id, clock and what served it. Passed explicitly, never global."""

    request_id: str
    dialect: Dialect
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0
    deployment: str | None = None
    attempts: int = 0
    route: str | None = None
    """Why the serving deployment was chosen: primary, spill:<why>, retry, fallback:<model>, panic."""
    headers: dict[str, str] = field(default_factory=dict)
    """The request's headers, names lower-cased."""
    usage: Usage = field(default_factory=Usage)
    """Tokens of the answer (kept current while a stream passes)."""
    attempt_log: list[Any] = field(default_factory=list)
    """The router's attempt records (modelyard.routing.router.AttemptRecord)."""
    ttft_s: float | None = None
    """Time to the first upstream event of the serving attempt (streams)."""
    cost_nano: int | None = None
    """What the request cost, once settled."""
    principal: Any = None
    """The authenticated caller (modelyard.policy.auth.Principal)."""
    outcome: str = "ok"
    """How the answer ended for the caller: ok, upstream_cut, timeout, client_disconnect, error."""
    wall_start: float = field(default_factory=time.time)
    error: BaseException | None = None
    """The error the caller was answered with, if any."""
    model: str | None = None
    stream: bool = False
    capture: bool = False
    """Whether this request's prompt and answer may be stored (per key, or globally)."""
    prompt: Any = None
    response: Any = None
    conversation: Any = None
    context: str | None = None
    """What context fitting did (the ``x-modelyard-context`` header): fit, compressed:<n>,
    trimmed:<n msgs>, summarized:<n msgs>[:cached], fallback:<model>."""
    context_exclude: frozenset[str] = frozenset()
    """Deployments whose window cannot hold this request (skipped by the router)."""
    """The server-side conversation turn this request appends once answered
    (modelyard.conversations.service.PendingTurn), if it names one."""

    reported_overhead_ms: float | None = None
    cache: str | None = None
    """Response cache: ``hit``, ``miss`` or ``bypass`` (the ``x-modelyard-cache`` header)."""
    cache_kind: str | None = None
    """``exact`` or ``semantic`` when a cache applies to the model; None when none does."""
    cache_lookup_ms: float | None = None
    """The overhead as sent in the response headers (for streams: at the first byte)."""
    route_name: str | None = None
    """The smart route the request named (``auto``), if any."""
    route_decision: Any = None
    """That route's decision (modelyard.routing.smart.decide.Decision), sent as ``x-modelyard-decision``."""
    route_reason: str | None = None
    local_only: bool = False
    """A routing rule allows only local deployments for this request (fallbacks and hedges too)."""

    @staticmethod
    def new(dialect: Dialect, headers: dict[str, str], request_id: str | None = None) -> RequestContext:
        return RequestContext(request_id or "req_" + os.urandom(12).hex(), dialect, headers=headers)

    def overhead_ms(self) -> float:
        if self.reported_overhead_ms is not None:
            return self.reported_overhead_ms
        return max(0.0, (time.perf_counter() - self.started - self.upstream_s) * 1000)

    def response_headers(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        self.reported_overhead_ms = overhead = self.overhead_ms()
        headers = [
            (b"content-type", content_type),
            (b"x-request-id", self.request_id.encode()),
            (b"x-modelyard-overhead-ms", f"{overhead:.3f}".encode()),
        ]
        if self.dialect is Dialect.ANTHROPIC:
            headers.append((b"request-id", self.request_id.encode()))
        if self.deployment is not None:
            headers.append((b"x-modelyard-deployment", self.deployment.encode()))
        if self.attempts:
            headers.append((b"x-modelyard-attempts", str(self.attempts).encode()))
        if self.route is not None:
            headers.append((b"x-modelyard-route", self.route.encode()))
        if self.cache is not None:
            headers.append((b"x-modelyard-cache", self.cache.encode()))
        if self.route_decision is not None:
            headers.append((b"x-modelyard-decision", self.route_decision.header().encode("ascii", "replace")))
        if self.context is not None:
            headers.append((b"x-modelyard-context", self.context.encode()))
        return headers


def header_map(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole body, refusing one over ``limit`` bytes before buffering it (413)."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("the Content-Length header is not a number")
        if int(declared) > limit:
            raise RequestTooLargeError(
                f"request body is {int(declared)} bytes; the limit is {limit} "
                "(server.max_body_bytes in the config)"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(
                f"request body exceeds the limit of {limit} bytes (server.max_body_bytes in the config)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, ctx: RequestContext) -> None:
    await send_bytes(send, status, orjson.dumps(data), ctx.response_headers(b"application/json"))


def is_terminal_event(chunk: bytes) -> bool:
    """Whether an SSE chunk carries a stream's last event (OpenAI ``[DONE]``, Anthropic ``message_stop``)."""
    return b"data: [DONE]" in chunk or b"event: message_stop" in chunk


async def send_stream(
    send: Send,
    receive: Receive,
    first: bytes,
    rest: AsyncIterator[bytes],
    headers: list[tuple[bytes, bytes]],
) -> bool:
    """Stream SSE bytes; stop early (returning False) when the client goes away.

    The client leaving is noticed at once, even while the upstream is silent: the watcher cancels
    this task, which closes the upstream stream (and frees its deployment slot) right away.

    A client that leaves *after* the stream's terminal event (OpenAI's ``[DONE]``, Anthropic's
    ``message_stop``) got the whole answer: the official SDKs close the connection as soon as they
    read it. Such a stream is complete (returns True); the rest of the upstream stream is still
    drained, unsent, so that what follows the stream (ledger, conversation, cache) sees all of it.
    """
    disconnected = asyncio.Event()
    streaming = asyncio.current_task()
    delivered = False  # the terminal event was sent

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                if not delivered and streaming is not None:
                    streaming.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")],
            }
        )
        await send({"type": "http.response.body", "body": first, "more_body": True})
        delivered = is_terminal_event(first)
        async for chunk in rest:
            if delivered and disconnected.is_set():
                continue  # drained, not sent: the client has the whole answer and left
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                if not delivered:
                    raise
                disconnected.set()
                continue
            delivered = delivered or is_terminal_event(chunk)
        watcher.cancel()
        if not disconnected.is_set():
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                return delivered
        return True
    except asyncio.CancelledError:
        if disconnected.is_set() and streaming is not None:
            streaming.uncancel()
            return False
        raise
    except OSError:
        return False
    finally:
        watcher.cancel()
