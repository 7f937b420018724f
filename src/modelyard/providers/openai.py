"""The OpenAI Chat Completions adapter: OpenAI itself and every OpenAI-compatible server.

vLLM, llama.cpp server and Ollama are *presets* (a default ``base_url``), not copies.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import orjson

from modelyard.providers._http import HTTPProvider
from modelyard.providers.base import CallContext, EmbeddingResult, WireProtocol
from modelyard.redact import Redactor

BASE_URL_PRESETS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp-server": "http://127.0.0.1:8080/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}


class OpenAIProvider(HTTPProvider):
    protocol = WireProtocol.OPENAI
    name = "openai"
    chat_path = "/chat/completions"

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
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(
            session=session,
            base_url=base_url,
            headers={**headers, **auth},
            timeout_s=timeout_s,
            redact=redact,
        )

    async def embed(self, inputs: list[str], model: str, ctx: CallContext) -> EmbeddingResult:
        raw = await self._post(
            "/embeddings", {"model": model, "input": inputs, "encoding_format": "float"}, ctx
        )
        data = orjson.loads(raw)
        vectors = [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]
        return EmbeddingResult(vectors, int(data.get("usage", {}).get("prompt_tokens", 0)))
