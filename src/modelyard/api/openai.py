"""OpenAI-compatible routes: chat completions, embeddings, models."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from modelyard.api.asgi import Receive, RequestContext, Send, send_bytes, send_json, send_stream
from modelyard.api.validate import check_openai_chat, embedding_inputs
from modelyard.errors import NotFoundError
from modelyard.providers.base import CallContext, WireProtocol
from modelyard.state import AppState

MAX_EMBEDDING_INPUTS = 2048


async def chat_completions(
    state: AppState, body: dict[str, Any], ctx: RequestContext, receive: Receive, send: Send
) -> None:
    server = state.config.server
    check_openai_chat(body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens)
    if body.get("stream"):
        outcome = await state.chat.stream(WireProtocol.OPENAI, body, ctx)
        headers = ctx.response_headers(b"text/event-stream; charset=utf-8")
        try:
            await send_stream(send, receive, outcome.first, outcome.rest, headers)
        finally:
            await outcome.rest.aclose()  # type: ignore[attr-defined]
        return
    raw = await state.chat.complete(WireProtocol.OPENAI, body, ctx)
    await send_bytes(send, 200, raw, ctx.response_headers(b"application/json"))


def _encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


async def embeddings(state: AppState, body: dict[str, Any], ctx: RequestContext, send: Send) -> None:
    inputs = embedding_inputs(body, MAX_EMBEDDING_INPUTS)
    target = state.registry.resolve(body["model"], embeddings=True)
    ctx.deployment = target.label
    started = time.perf_counter()
    try:
        result = await target.provider.embed(inputs, target.upstream_model, CallContext(ctx.request_id))
    finally:
        ctx.upstream_s += time.perf_counter() - started
    fmt = body.get("encoding_format") or "float"
    dimensions = body.get("dimensions")
    vectors = result.vectors
    if isinstance(dimensions, int) and not isinstance(dimensions, bool) and 0 < dimensions < len(vectors[0]):
        # Matryoshka-style truncation then re-normalisation, as OpenAI does for text-embedding-3.
        arr = np.asarray(vectors, dtype=np.float32)[:, :dimensions]
        arr /= np.linalg.norm(arr, axis=1, keepdims=True) + 1e-12
        vectors = arr.tolist()
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(v, fmt)}
        for i, v in enumerate(vectors)
    ]
    await send_json(
        send,
        200,
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        },
        ctx,
    )


def _model_entries(state: AppState) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for model in state.registry.models:
        owner = model.deployments[0].provider
        entries += [(name, owner) for name in (model.name, *model.aliases)]
    return entries


async def list_models(state: AppState, ctx: RequestContext, send: Send) -> None:
    if "anthropic-version" in ctx.headers:
        data = [
            {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
            for name, _ in _model_entries(state)
        ]
        await send_json(
            send,
            200,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
            ctx,
        )
        return
    await send_json(
        send,
        200,
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": owner}
                for name, owner in _model_entries(state)
            ],
        },
        ctx,
    )


async def get_model(state: AppState, model_id: str, ctx: RequestContext, send: Send) -> None:
    for name, owner in _model_entries(state):
        if name == model_id:
            if "anthropic-version" in ctx.headers:
                await send_json(
                    send,
                    200,
                    {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"},
                    ctx,
                )
            else:
                await send_json(
                    send, 200, {"id": name, "object": "model", "created": 0, "owned_by": owner}, ctx
                )
            return
    raise NotFoundError(f"model {model_id!r} is not served here; GET /v1/models lists them")
