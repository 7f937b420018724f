"""The Anthropic Messages adapter (the native API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import orjson

from modelyard.providers._http import error_from_response, map_transport_errors
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol
from modelyard.providers.sse import SSEDecoder
from modelyard.redact import Redactor

ANTHROPIC_VERSION = "2023-06-01"
# Client headers worth forwarding: they select API behaviour, never where a request goes.
FORWARDED_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


class AnthropicProvider(Provider):
    protocol = WireProtocol.ANTHROPIC
    name = "anthropic"

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        headers: Mapping[str, str],
        timeout_s: float,
        redact: Redactor,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._redact = redact
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **headers,
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    def _request_headers(self, ctx: CallContext) -> dict[str, str]:
        headers = dict(self._headers)
        for name in FORWARDED_CLIENT_HEADERS:
            if name in ctx.extra_headers:
                headers[name] = ctx.extra_headers[name]
        return headers

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
        return await self._post("/v1/messages", body, ctx)

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        result: JSONDict = orjson.loads(await self.complete_raw(body, ctx))
        return result

    async def count_tokens(self, body: JSONDict, ctx: CallContext) -> int:
        data = orjson.loads(await self._post("/v1/messages/count_tokens", body, ctx))
        return int(data["input_tokens"])

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        model = str(body.get("model"))
        headers = {**self._request_headers(ctx), "accept": "text/event-stream"}
        with map_transport_errors(self.name, model, self._redact):
            async with self._session.post(
                self._base_url + "/v1/messages",
                data=orjson.dumps(body),
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise error_from_response(resp.status, raw, resp.headers, self.name, model, self._redact)
                decoder = SSEDecoder()
                async for chunk in resp.content.iter_any():
                    for event in decoder.feed(chunk):
                        yield event
                for event in decoder.close():
                    yield event
