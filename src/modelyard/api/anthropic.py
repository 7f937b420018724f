"""Anthropic-compatible routes: messages and count_tokens."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Receive, RequestContext, Send, send_json
from modelyard.api.inference import serve_chat
from modelyard.api.validate import check_anthropic_messages
from modelyard.providers.base import WireProtocol
from modelyard.state import AppState


async def messages(
    state: AppState, body: dict[str, Any], ctx: RequestContext, receive: Receive, send: Send
) -> None:
    server = state.config.server
    check_anthropic_messages(
        body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens
    )
    await serve_chat(state, WireProtocol.ANTHROPIC, body, ctx, receive, send)


async def count_tokens(state: AppState, body: dict[str, Any], ctx: RequestContext, send: Send) -> None:
    server = state.config.server
    check_anthropic_messages(
        body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens, count_only=True
    )
    target = state.registry.resolve(body["model"])
    ctx.deployment = target.label
    assert state.context is not None
    tokens = await state.context.count_for_target(target, body, WireProtocol.ANTHROPIC, ctx.request_id)
    await send_json(send, 200, {"input_tokens": tokens}, ctx)
