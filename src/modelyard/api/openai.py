"""OpenAI-compatible routes: chat completions, embeddings, models."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np

from modelyard.api.asgi import Receive, RequestContext, Send, send_json
from modelyard.api.inference import serve_chat
from modelyard.api.validate import check_openai_chat, embedding_inputs
from modelyard.errors import GatewayError, NotFoundError, UpstreamTimeoutError
from modelyard.providers.base import CallContext, EmbeddingResult, WireProtocol
from modelyard.routing.deployment import DeploymentState
from modelyard.state import AppState

MAX_EMBEDDING_INPUTS = 2048


async def chat_completions(
    state: AppState, body: dict[str, Any], ctx: RequestContext, receive: Receive, send: Send
) -> None:
    server = state.config.server
    check_openai_chat(body, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens)
    await serve_chat(state, WireProtocol.OPENAI, body, ctx, receive, send)


def _encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


async def embeddings(state: AppState, body: dict[str, Any], ctx: RequestContext, send: Send) -> None:
    inputs = embedding_inputs(body, MAX_EMBEDDING_INPUTS)
    if state.smart is not None:
        body = await state.smart.resolve_embeddings(body, ctx)  # a route → its embedding model
    ctx.model = str(body["model"])
    state.registry.resolve(body["model"], embeddings=True)  # a clear 404 for a chat-only model
    group = state.router.group(body["model"])
    ticket = await state.admission.admit(
        ctx.principal, {**body, "max_tokens": 0}, WireProtocol.OPENAI, group, ctx
    )
    call_ctx = CallContext(ctx.request_id)

    async def call(dep: DeploymentState, per_try_s: float) -> EmbeddingResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(per_try_s):
                return await dep.target.provider.embed(inputs, dep.target.upstream_model, call_ctx)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{dep.label} gave no embeddings within the deadline",
                provider=dep.target.provider.name,
                model=dep.target.upstream_model,
            ) from None
        finally:
            ctx.upstream_s += time.perf_counter() - started

    outcome = "error"
    try:
        try:
            execution = await state.router.execute(
                group,
                call,
                body=body,
                supports=lambda d: d.target.embeddings and (d.policy.local or not ctx.local_only),
            )
        except GatewayError as exc:
            ctx.attempt_log = list(getattr(exc, "attempts", None) or [])
            raise
        ctx.attempt_log = list(execution.attempts)
        ctx.deployment, ctx.attempts, ctx.route = (
            execution.deployment.label,
            len(execution.attempts),
            execution.reason,
        )
        result = execution.result
        ctx.usage.tokens_in, ctx.usage.reported = result.prompt_tokens, True
        await _send_embeddings(result, body, ctx, send)
        outcome = "ok"
    finally:
        await state.admission.settle(ticket, ctx, outcome)


async def _send_embeddings(
    result: EmbeddingResult, body: dict[str, Any], ctx: RequestContext, send: Send
) -> None:
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
    if state.smart is not None:
        entries += [(name, "modelyard-route") for name in state.smart.routes]  # model: auto, …
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
