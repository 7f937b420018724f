"""The shared shape of an inference request: admit, serve (plain or streamed), settle — always."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Receive, RequestContext, Send, send_bytes, send_stream
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
        if body.get("stream"):
            stream = await state.chat.stream(client, body, ctx)
            headers = ctx.response_headers(b"text/event-stream; charset=utf-8")
            rest = stream.rest
            if ctx.capture:
                rest, ctx.response = capture_stream(stream.first, rest, capture.max_capture_bytes)
            try:
                completed = await send_stream(send, receive, stream.first, rest, headers)
            finally:
                await stream.rest.aclose()  # type: ignore[attr-defined]
            outcome = ctx.outcome if completed else "client_disconnect"
        else:
            raw = await state.chat.complete(client, body, ctx)
            if ctx.capture:
                ctx.response = raw
            await send_bytes(send, 200, raw, ctx.response_headers(b"application/json"))
            outcome = "ok"
    finally:
        await state.admission.settle(ticket, ctx, outcome)
