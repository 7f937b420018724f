"""Anthropic-compatible routes: messages and count_tokens."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Receive, RequestContext, Send, send_bytes, send_json, send_stream
from modelyard.api.validate import check_anthropic_messages
from modelyard.providers.base import WireProtocol
from modelyard.routing.tokens import count_anthropic_request
from modelyard.state import AppState


async def messages(
    state: AppState, body: dict[str, Any], ctx: RequestContext, receive: Receive, send: Send
) -> None:
    server = state.config.server
    check_anthropic_messages(
        body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens
    )
    if body.get("stream"):
        outcome = await state.chat.stream(WireProtocol.ANTHROPIC, body, ctx)
        headers = ctx.response_headers(b"text/event-stream; charset=utf-8")
        try:
            await send_stream(send, receive, outcome.first, outcome.rest, headers)
        finally:
            await outcome.rest.aclose()  # type: ignore[attr-defined]
        return
    raw = await state.chat.complete(WireProtocol.ANTHROPIC, body, ctx)
    await send_bytes(send, 200, raw, ctx.response_headers(b"application/json"))


async def count_tokens(state: AppState, body: dict[str, Any], ctx: RequestContext, send: Send) -> None:
    server = state.config.server
    check_anthropic_messages(
        body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens, count_only=True
    )
    target = state.registry.resolve(body["model"])
    ctx.deployment = target.label
    tokens = await count_anthropic_request(target, body, ctx.request_id)
    await send_json(send, 200, {"input_tokens": tokens}, ctx)
