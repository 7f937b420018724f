"""What the HTTP providers share: the session factory, error translation and the POST/stream calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from modelyard.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent
from modelyard.providers.sse import SSEDecoder
from modelyard.redact import Redactor

DRIBBLE_BYTES = 64
"""A read this small that completes no event: the upstream is sending a few bytes per write."""
DRIBBLE_WAIT_S = 0.005
"""How long reading pauses then, so the kernel gathers those bytes into one read (RELIABILITY A13)."""


async def _let_bytes_gather(resp: aiohttp.ClientResponse) -> None:
    """Stop reading the upstream socket for :data:`DRIBBLE_WAIT_S`: a byte-per-write upstream then
    costs one read per pause instead of one per byte (at most that much added delay)."""
    connection = resp.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return
    protocol.pause_reading()
    try:
        await asyncio.sleep(DRIBBLE_WAIT_S)
    finally:
        protocol.resume_reading()


def new_session(connect_timeout_s: float) -> aiohttp.ClientSession:
    """One pooled session for all upstream calls of the process."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        # A small read buffer: with a slow client, each stream holds little before backpressure
        # stops reading from the upstream (RELIABILITY B3).
        read_bufsize=2**14,
    )


@contextmanager
def map_transport_errors(provider: str, model: str, redact: Redactor) -> Iterator[None]:
    """Re-raise transport failures as our UpstreamError subclasses (httpx's habit)."""
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError(
            f"{provider} model {model!r} did not answer in time; raise timeout_s in the config if "
            "this model is slow",
            provider=provider,
            model=model,
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(
            f"cannot reach {provider} upstream for model {model!r}: {redact(str(exc))}",
            provider=provider,
            model=model,
        ) from exc


def error_from_response(
    status: int, body: bytes, headers: Any, provider: str, model: str, redact: Redactor
) -> UpstreamError:
    """Build an UpstreamError from an upstream's error answer (OpenAI or Anthropic shape)."""
    message = ""
    code: str | None = None
    upstream_type: str | None = None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or "")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        upstream_type = err.get("type") if isinstance(err.get("type"), str) else None
    elif isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    if not message:
        message = body[:300].decode(errors="replace") or f"HTTP {status}"
    return UpstreamError(
        f"{provider} upstream error ({status}): {redact(message)}",
        status=status,
        provider=provider,
        model=model,
        headers={
            k: v for k, v in headers.items() if k.lower() in ("retry-after", "x-request-id", "request-id")
        },
        code=code,
        upstream_type=upstream_type,
    )


class HTTPProvider(Provider):
    """What OpenAI- and Anthropic-format HTTP adapters share: one POST, one SSE stream.

    Subclasses set ``protocol``, ``name`` and ``chat_path`` and say which headers to send.
    """

    chat_path: str

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        redact: Redactor,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        # sock_read bounds the idle gap between stream chunks as well as the wait for headers.
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._redact = redact
        self._headers = {"content-type": "application/json", "accept": "application/json", **headers}

    def _request_headers(self, ctx: CallContext) -> dict[str, str]:
        return {**self._headers, "x-request-id": ctx.request_id}

    async def _post(self, path: str, body: JSONDict, ctx: CallContext) -> bytes:
        model = str(body.get("model"))
        with map_transport_errors(self.name, model, self._redact):
            async with self._session.post(
                self._base_url + path,
                data=orjson.dumps(body),
                headers=self._request_headers(ctx),
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_from_response(resp.status, raw, resp.headers, self.name, model, self._redact)
                return raw

    async def complete_raw(self, body: JSONDict, ctx: CallContext) -> bytes:
        return await self._post(self.chat_path, body, ctx)

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        result: JSONDict = orjson.loads(await self.complete_raw(body, ctx))
        return result

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        model = str(body.get("model"))
        headers = {**self._request_headers(ctx), "accept": "text/event-stream"}
        with map_transport_errors(self.name, model, self._redact):
            async with self._session.post(
                self._base_url + self.chat_path,
                data=orjson.dumps(body),
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise error_from_response(resp.status, raw, resp.headers, self.name, model, self._redact)
                decoder = SSEDecoder()
                # Bounded reads: a slow client then holds at most aiohttp's buffer + 16 KiB per stream.
                async for chunk in resp.content.iter_chunked(16384):
                    events = decoder.feed(chunk)
                    for event in events:
                        yield event
                    if not events and len(chunk) < DRIBBLE_BYTES:
                        await _let_bytes_gather(resp)
                for event in decoder.close():
                    yield event
