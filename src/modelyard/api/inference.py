"""The shared shape of an inference request: admit, serve (plain or streamed), settle — always."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Receive, RequestContext, Send, send_bytes, send_stream
from modelyard.cache.gateway import cache_lookup, cache_store, cache_tee, cached_answer, cached_stream, is_hit
from modelyard.providers.base import WireProtocol
from modelyard.state import AppState
from modelyard.telemetry.requestlog_sink import capture_stream


async def serve_chat(
    state: AppState,
    client: WireProtocol,
    body: dict[str, Any],
    ctx: RequestContext,
    receive: Receive,
    send: Send,
) -> None:
    """Serve one chat request; whatever happens (failure, cut, client gone), it is settled."""
    body = await state.conversations.expand(client, body, ctx)  # a no-op without a conversation
    if state.smart is not None:
        body = await state.smart.resolve(client, body, ctx)  # a route name → the chosen model
    ctx.model, ctx.stream = str(body["model"]), bool(body.get("stream"))
    group = state.router.group(body["model"])
    capture = state.config.request_log
    ctx.capture = capture.enabled and (
        capture.capture_prompts or bool(getattr(getattr(ctx.principal, "key", None), "store_prompts", False))
    )
    if ctx.capture:
        ctx.prompt = body  # made into text, redacted and cut to size off the hot path
    ticket = await state.admission.admit(ctx.principal, body, client, group, ctx)
    outcome = "error"
    try:
        found = await cache_lookup(state.cache, client, body, ctx, group.name)
        if state.context is not None and not is_hit(found):
            body = await state.context.fit(client, body, ctx, group)  # may trim, summarize, re-route
        if body.get("stream"):
            if is_hit(found):
                stream = cached_stream(found, client, body, ctx)
            else:
                stream = await state.chat.stream(client, body, ctx)
            headers = ctx.response_headers(b"text/event-stream; charset=utf-8")
            rest = state.conversations.track_stream(ctx, stream.first, stream.rest)
            rest, cache_done = cache_tee(state.cache, found, client, stream.first, rest)
            if ctx.capture:
                rest, ctx.response = capture_stream(stream.first, rest, capture.max_capture_bytes)
            try:
                completed = await send_stream(send, receive, stream.first, rest, headers)
            finally:
                await stream.rest.aclose()  # type: ignore[attr-defined]
            outcome = ctx.outcome if completed else "client_disconnect"
            if completed:
                cache_done(ctx)
        else:
            raw = cached_answer(found, ctx) if is_hit(found) else await state.chat.complete(client, body, ctx)
            await state.conversations.record_answer(ctx, raw)
            if ctx.capture:
                ctx.response = raw
            await send_bytes(send, 200, raw, ctx.response_headers(b"application/json"))
            outcome = "ok"
            cache_store(state.cache, found, client, raw, ctx)
    finally:
        await state.admission.settle(ticket, ctx, outcome)
