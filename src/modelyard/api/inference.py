"""The shared shape of an inference request: admit, serve (plain or streamed), settle — always."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Receive, RequestContext, Send, send_bytes, send_stream
from modelyard.providers.base import WireProtocol
from modelyard.state import AppState


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
    ticket = await state.admission.admit(ctx.principal, body, client, group, ctx)
    outcome = "error"
    try:
        if body.get("stream"):
            stream = await state.chat.stream(client, body, ctx)
            headers = ctx.response_headers(b"text/event-stream; charset=utf-8")
            try:
                completed = await send_stream(send, receive, stream.first, stream.rest, headers)
            finally:
                await stream.rest.aclose()  # type: ignore[attr-defined]
            outcome = ctx.outcome if completed else "client_disconnect"
        else:
            raw = await state.chat.complete(client, body, ctx)
            await send_bytes(send, 200, raw, ctx.response_headers(b"application/json"))
            outcome = "ok"
    finally:
        await state.admission.settle(ticket, ctx, outcome)
