"""The Anthropic Messages adapter (the native API)."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import orjson

from modelyard.providers._http import HTTPProvider
from modelyard.providers.base import CallContext, JSONDict, WireProtocol
from modelyard.redact import Redactor

ANTHROPIC_VERSION = "2023-06-01"
# Client headers worth forwarding: they select API behaviour, never where a request goes.
FORWARDED_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


class AnthropicProvider(HTTPProvider):
    protocol = WireProtocol.ANTHROPIC
    name = "anthropic"
    chat_path = "/v1/messages"

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
        auth = {"x-api-key": api_key} if api_key else {}
        super().__init__(
            session=session,
            base_url=base_url,
            headers={"anthropic-version": ANTHROPIC_VERSION, **headers, **auth},
            timeout_s=timeout_s,
            redact=redact,
        )

    def _request_headers(self, ctx: CallContext) -> dict[str, str]:
        headers = super()._request_headers(ctx)
        for name in FORWARDED_CLIENT_HEADERS:
            if name in ctx.extra_headers:
                headers[name] = ctx.extra_headers[name]
        return headers

    async def count_tokens(self, body: JSONDict, ctx: CallContext) -> int:
        upstream = {k: v for k, v in body.items() if k not in ("max_tokens", "stream", "metadata")}
        data = orjson.loads(await self._post("/v1/messages/count_tokens", upstream, ctx))
        return int(data["input_tokens"])
