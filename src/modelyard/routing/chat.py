"""Executes one chat request: resolve the model, translate across protocols, call, translate back.

The commit point (DESIGN invariant 2) is here: a stream's first event is awaited before the
caller sees a byte, so failures up to then become ordinary error responses; after it, a failure
ends the stream with an explicit error event in the caller's protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.api.errors import stream_error_event
from modelyard.errors import GatewayError, UpstreamError
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol
from modelyard.providers.registry import Registry, Target
from modelyard.redact import Redactor
from modelyard.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

log = logging.getLogger("modelyard.chat")


@dataclass(slots=True)
class StreamOutcome:
    first: bytes
    rest: AsyncIterator[bytes]


# Fields that act as a control plane in some gateways (CVE-2024-6587): a request body must never
# choose where a request goes or which credentials travel with it, so they are never forwarded.
CONTROL_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "headers",
        "callbacks",
        "success_callback",
        "failure_callback",
        "logger_fn",
        "proxy",
        "organization",
    }
)


def _forwarded_headers(ctx: RequestContext) -> dict[str, str]:
    return {k: v for k, v in ctx.headers.items() if k in ("anthropic-version", "anthropic-beta")}


class ChatService:
    """Serves chat requests of either protocol from any provider."""

    def __init__(self, registry: Registry, *, default_anthropic_max_tokens: int, redact: Redactor) -> None:
        self._registry = registry
        self._default_anthropic_max_tokens = default_anthropic_max_tokens
        self._redact = redact

    def _upstream_body(self, client: WireProtocol, target: Target, body: JSONDict) -> JSONDict:
        native = target.provider.protocol
        if native is client:
            upstream = dict(body)
        elif native is WireProtocol.OPENAI:
            upstream = anthropic_request_to_openai(body)
        else:
            upstream = openai_request_to_anthropic(
                body, default_max_tokens=self._default_anthropic_max_tokens
            )
        upstream["model"] = target.upstream_model
        return upstream

    async def complete(self, client: WireProtocol, body: JSONDict, ctx: RequestContext) -> bytes:
        target = self._registry.resolve(body["model"])
        ctx.deployment = target.label
        upstream = self._upstream_body(client, target, body)
        call = CallContext(ctx.request_id, extra_headers=_forwarded_headers(ctx))
        provider = target.provider
        started = time.perf_counter()
        try:
            if provider.protocol is client:
                return await provider.complete_raw(upstream, call)
            response = await provider.complete(upstream, call)
        finally:
            ctx.upstream_s += time.perf_counter() - started
        return orjson.dumps(self._translate_response(client, response, target))

    @staticmethod
    def _translate_response(client: WireProtocol, response: JSONDict, target: Target) -> JSONDict:
        if client is WireProtocol.ANTHROPIC:
            return openai_response_to_anthropic(
                response, model=str(response.get("model") or target.upstream_model)
            )
        return anthropic_response_to_openai(
            response, model=str(response.get("model") or target.upstream_model)
        )

    async def stream(self, client: WireProtocol, body: JSONDict, ctx: RequestContext) -> StreamOutcome:
        target = self._registry.resolve(body["model"])
        ctx.deployment = target.label
        upstream = self._upstream_body(client, target, body)
        call = CallContext(ctx.request_id, extra_headers=_forwarded_headers(ctx))
        encoded = self._encode(client, target.provider, upstream, call, body, target)
        started = time.perf_counter()
        try:
            first = await anext(encoded)
        except StopAsyncIteration:
            raise UpstreamError(
                "the upstream ended the stream before sending anything",
                status=502,
                provider=target.provider.name,
                model=target.upstream_model,
            ) from None
        finally:
            ctx.upstream_s += time.perf_counter() - started
        return StreamOutcome(first, self._guard(encoded, ctx))

    async def _encode(
        self,
        client: WireProtocol,
        provider: Provider,
        upstream: JSONDict,
        call: CallContext,
        body: JSONDict,
        target: Target,
    ) -> AsyncIterator[bytes]:
        events = provider.stream(upstream, call)
        try:
            if provider.protocol is client:
                async for event in events:
                    yield event.encode()
                return
            translator: OpenAIToAnthropicStream | AnthropicToOpenAIStream
            if client is WireProtocol.ANTHROPIC:
                translator = OpenAIToAnthropicStream(model=target.upstream_model)
            else:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                translator = AnthropicToOpenAIStream(model=target.upstream_model, include_usage=include_usage)
            async for event in events:
                for out in translator.feed(event):
                    yield out.encode()
            for out in translator.finish():
                yield out.encode()
        finally:
            await _aclose(events)

    async def _guard(self, encoded: AsyncIterator[bytes], ctx: RequestContext) -> AsyncIterator[bytes]:
        """After the commit point: an upstream failure becomes an explicit error event, then the end."""
        try:
            async for chunk in encoded:
                yield chunk
        except GatewayError as exc:
            yield stream_error_event(exc, ctx)
        except Exception as exc:
            error = GatewayError(f"the stream failed inside the gateway (request {ctx.request_id})")
            del exc
            yield stream_error_event(error, ctx)
        finally:
            await _aclose(encoded)


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def client_protocol(dialect: Dialect) -> WireProtocol:
    return WireProtocol.ANTHROPIC if dialect is Dialect.ANTHROPIC else WireProtocol.OPENAI


__all__ = ["ChatService", "SSEEvent", "StreamOutcome", "client_protocol"]
