"""Errors rendered in the caller's own API shape."""

from __future__ import annotations

import math
from typing import Any

import orjson

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.errors import GatewayError, UpstreamError
from modelyard.providers.base import SSEEvent


def error_payload(exc: GatewayError, ctx: RequestContext) -> dict[str, Any]:
    if ctx.dialect is Dialect.ANTHROPIC:
        return {
            "type": "error",
            "error": {"type": exc.anthropic_type, "message": exc.message},
            "request_id": ctx.request_id,
        }
    return {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}


def error_headers(exc: GatewayError) -> list[tuple[bytes, bytes]]:
    if isinstance(exc, UpstreamError) and exc.retry_after is not None:
        return [(b"retry-after", exc.retry_after.encode())]
    retry_after_s = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after_s, int | float):
        return [(b"retry-after", str(max(1, math.ceil(retry_after_s))).encode())]
    return []


def stream_error_event(exc: GatewayError, ctx: RequestContext) -> bytes:
    """The event that ends a stream after the commit point: explicit, never a clean end."""
    payload = orjson.dumps(error_payload(exc, ctx))
    if ctx.dialect is Dialect.ANTHROPIC:
        return SSEEvent(payload, "error").encode()
    return SSEEvent(payload).encode()
