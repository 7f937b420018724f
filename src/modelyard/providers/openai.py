"""The OpenAI Chat Completions adapter: OpenAI itself and every OpenAI-compatible server.

vLLM, llama.cpp server and Ollama are *presets* (a default ``base_url``), not copies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import orjson

from modelyard.providers._http import error_from_response, map_transport_errors
from modelyard.providers.base import (
    CallContext,
    EmbeddingResult,
    JSONDict,
    Provider,
    SSEEvent,
    WireProtocol,
)
from modelyard.providers.sse import SSEDecoder
from modelyard.redact import Redactor

BASE_URL_PRESETS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp-server": "http://127.0.0.1:8080/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}


class OpenAIProvider(Provider):
    protocol = WireProtocol.OPENAI
    name = "openai"

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
        self._headers = {"content-type": "application/json", "accept": "application/json", **headers}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

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
        return await self._post("/chat/completions", body, ctx)

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        result: JSONDict = orjson.loads(await self.complete_raw(body, ctx))
        return result

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        model = str(body.get("model"))
        headers = {**self._request_headers(ctx), "accept": "text/event-stream"}
        with map_transport_errors(self.name, model, self._redact):
            async with self._session.post(
                self._base_url + "/chat/completions",
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

    async def embed(self, inputs: list[str], model: str, ctx: CallContext) -> EmbeddingResult:
        raw = await self._post("/embeddings", {"model": model, "input": inputs}, ctx)
        data = orjson.loads(raw)
        vectors = [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]
        return EmbeddingResult(vectors, int(data.get("usage", {}).get("prompt_tokens", 0)))
