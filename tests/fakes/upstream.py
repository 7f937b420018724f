"""Fake OpenAI and Anthropic upstream servers that replay recorded wire bodies byte for byte.

Each fake is an aiohttp app on 127.0.0.1 (a random port) run in its own thread with its own event
loop. The request's ``model`` picks the behaviour:

=====================  ==========================================================================
``rec-<name>``         replay ``recordings/<vendor>/rec-<name>.json`` (or ``.sse`` when streaming;
                       ``.usage.sse`` when OpenAI's ``stream_options.include_usage`` is set)
``err-<status>``       answer with that status and the vendor's exact error body
                       (``recordings/<vendor>/err-<status>.json``; 429 carries ``retry-after``)
``drop-mid``           stream the first events of ``rec-text``, then cut the connection
anything else          the vendor's 404 for an unknown model
=====================  ==========================================================================

A request without the configured API key (``Authorization: Bearer`` for OpenAI, ``x-api-key`` for
Anthropic) gets the vendor's 401, echoing the key it saw as some real servers do. Every request
is recorded (method, path, headers, body) so tests can assert what the gateway sent upstream.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer

RECORDINGS = Path(__file__).parent / "recordings"
Vendor = Literal["openai", "anthropic"]

# Response headers as each vendor sends them (the ones a client or the gateway may look at).
_JSON_HEADERS: dict[Vendor, dict[str, str]] = {
    "openai": {
        "openai-version": "2020-10-01",
        "openai-processing-ms": "412",
        "x-request-id": "req_7c1f0e5a9b",
    },
    "anthropic": {"request-id": "req_011CTGhFa1sW8DhU3xE4ySkj", "anthropic-organization-id": "4f8b2c1e"},
}
_ERROR_HEADERS: dict[tuple[Vendor, int], dict[str, str]] = {
    ("openai", 429): {
        "retry-after": "2",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "234",
        "x-ratelimit-reset-tokens": "237ms",
    },
    ("anthropic", 429): {
        "retry-after": "17",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
    },
    ("anthropic", 529): {"x-should-retry": "true"},
}
# Events of rec-text a dropped stream sends before the connection is cut (text "The capital").
DROP_AFTER_EVENTS: dict[Vendor, int] = {"openai": 3, "anthropic": 4}


def recording(vendor: Vendor, name: str) -> bytes:
    """The bytes of one recording, e.g. ``recording("openai", "rec-text.usage.sse")``."""
    return (RECORDINGS / vendor / name).read_bytes()


def split_events(stream: bytes) -> list[bytes]:
    """A recorded SSE stream as its events, each with its trailing blank line."""
    return [part + b"\n\n" for part in stream.split(b"\n\n") if part]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class FakeUpstream(LoopbackServer):
    """A fake vendor API on 127.0.0.1; ``base_url`` is what the gateway config points at."""

    def __init__(self, vendor: Vendor, *, api_key: str) -> None:
        self.vendor = vendor
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.served: list[str] = []
        """Recording file names served, in order (errors and 404s included)."""
        self._lock = threading.Lock()
        super().__init__()

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """OpenAI deployments take ``<base>/v1``; Anthropic ones the bare origin."""
        origin = f"http://127.0.0.1:{self.port}"
        return origin + "/v1" if self.vendor == "openai" else origin

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def thread_name(self) -> str:
        return f"fake {self.vendor} upstream"

    # -- what was received -------------------------------------------------------------------------
    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.served.clear()

    def last(self) -> RecordedRequest:
        with self._lock:
            assert self.requests, f"the fake {self.vendor} upstream received no request"
            return self.requests[-1]

    # -- serving -----------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = RecordedRequest(
            request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body
        )
        with self._lock:
            self.requests.append(record)
        routes = {
            "openai": {"/v1/chat/completions": "chat", "/v1/embeddings": "embed"},
            "anthropic": {"/v1/messages": "chat", "/v1/messages/count_tokens": "count"},
        }[self.vendor]
        kind = routes.get(request.path)
        if kind is None or request.method != "POST":
            return self._error(404, None, model="(no such route)")
        if not self._authorized(record.headers):
            return self._unauthorized(record.headers)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(400, None, model="")
        model = str(payload.get("model", ""))
        if kind == "embed":
            return (
                self._replay_json(f"{model}.json") if model == "rec-embed" else self._error(404, None, model)
            )
        if kind == "count":
            return self._replay_json("count-tokens.json")
        if model.startswith("err-") and model[4:].isdigit():
            return self._error(int(model[4:]), f"{model}.json", model)
        stream = bool(payload.get("stream"))
        if model == "drop-mid" and stream:
            return await self._drop_mid(request, payload)
        if not model.startswith("rec-"):
            return self._error(404, None, model)
        if not stream:
            return self._replay_json(f"{model}.json")
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        name = f"{model}.usage.sse" if include_usage and self._has(f"{model}.usage.sse") else f"{model}.sse"
        if not self._has(name):
            return self._error(404, None, model)
        return await self._replay_sse(request, name)

    def _has(self, name: str) -> bool:
        return (RECORDINGS / self.vendor / name).is_file()

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.vendor == "openai":
            return headers.get("authorization") == f"Bearer {self.api_key}"
        return headers.get("x-api-key") == self.api_key

    def _unauthorized(self, headers: dict[str, str]) -> web.Response:
        presented = headers.get("authorization", "").removeprefix("Bearer ") or headers.get("x-api-key", "")
        if self.vendor == "openai":
            # Some OpenAI-compatible servers echo the whole key: the gateway must redact it.
            error = {
                "message": f"Incorrect API key provided: {presented}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
            body = orjson.dumps({"error": error}, option=orjson.OPT_INDENT_2) + b"\n"
        else:
            body = orjson.dumps(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": f"invalid x-api-key: {presented}"},
                }
            )
        self._served("(401 unauthorized)")
        return web.Response(
            status=401, body=body, headers={**_JSON_HEADERS[self.vendor], "content-type": "application/json"}
        )

    def _served(self, name: str) -> None:
        with self._lock:
            self.served.append(name)

    def _replay_json(self, name: str) -> web.Response:
        self._served(name)
        return web.Response(
            body=recording(self.vendor, name),
            headers={**_JSON_HEADERS[self.vendor], "content-type": "application/json"},
        )

    def _error(self, status: int, name: str | None, model: str) -> web.Response:
        name = name if name is not None and self._has(name) else f"err-{status}.json"
        if not self._has(name):
            name = "err-404.json"
            status = 404
        body = recording(self.vendor, name).replace(b"{model}", model.encode())
        self._served(name)
        headers = {
            **_JSON_HEADERS[self.vendor],
            **_ERROR_HEADERS.get((self.vendor, status), {}),
            "content-type": "application/json",
        }
        return web.Response(status=status, body=body, headers=headers)

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **_JSON_HEADERS[self.vendor],
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        await response.prepare(request)
        return response

    async def _replay_sse(self, request: web.Request, name: str) -> web.StreamResponse:
        self._served(name)
        response = await self._open_stream(request)
        for event in split_events(recording(self.vendor, name)):
            # Two writes per event, split inside a line: the gateway must reassemble events from
            # arbitrary network chunks, as real streams arrive.
            middle = len(event) // 2
            await response.write(event[:middle])
            await response.write(event[middle:])
        await response.write_eof()
        return response

    async def _drop_mid(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        name = "rec-text.usage.sse" if include_usage and self._has("rec-text.usage.sse") else "rec-text.sse"
        count = DROP_AFTER_EVENTS[self.vendor]
        self._served(f"{name} (dropped after {count} events)")
        response = await self._open_stream(request)
        for event in split_events(recording(self.vendor, name))[:count]:
            await response.write(event)
        await asyncio.sleep(0.01)  # let the events reach the gateway before the cut
        transport = request.transport
        if transport is not None:
            transport.abort()  # no terminating chunk: the stream breaks as a dead connection does
        return response
