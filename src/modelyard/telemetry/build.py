"""Turning a finished request's context into a :class:`RequestRecord`."""

from __future__ import annotations

import time
from typing import Any

from modelyard.api.asgi import RequestContext
from modelyard.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
)
from modelyard.redact import Redactor
from modelyard.routing.router import Router
from modelyard.telemetry.record import AttemptInfo, RequestRecord

OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/messages": "chat",
    "/messages": "chat",
    "/v1/responses": "chat",  # the Responses API, served as chat (modelyard.api.responses)
    "/responses": "chat",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
    "/v1/messages/count_tokens": "count_tokens",
    "/messages/count_tokens": "count_tokens",
    "/v1/responses/input_tokens": "count_tokens",
    "/responses/input_tokens": "count_tokens",
}


def operation_of(path: str) -> str:
    if path in OPERATIONS:
        return OPERATIONS[path]
    if path.startswith("/admin/"):
        return "admin"
    if path in ("/healthz", "/readyz"):
        return "health"
    if "/models" in path:
        return "models"
    return "other"


def error_type_of(error: BaseException | None, outcome: str) -> str | None:
    """Whose fault: caller, policy, provider or gateway."""
    if error is None:
        return "provider" if outcome in ("upstream_cut", "timeout") else None
    if isinstance(error, AuthenticationError | PermissionDeniedError | RateLimitedError):
        return "policy"
    if isinstance(error, UpstreamError):
        return "provider"
    if isinstance(error, InvalidRequestError | NotFoundError):
        return "caller"
    if isinstance(error, GatewayError) and 400 <= error.status < 500:
        return "caller"
    return "gateway"


def build_record(
    ctx: RequestContext, *, method: str, path: str, status: int, router: Router | None, redact: Redactor
) -> RequestRecord:
    principal: Any = ctx.principal
    key = getattr(principal, "key", None)
    attempts = []
    for attempt in ctx.attempt_log:
        dep = router.deployment(attempt.deployment) if router is not None else None
        attempts.append(
            AttemptInfo(
                deployment=attempt.deployment,
                provider=dep.target.provider.name if dep else attempt.deployment.split("/", 1)[0],
                upstream_model=dep.target.upstream_model if dep else attempt.deployment.split("/", 1)[-1],
                local=bool(dep and dep.policy.local),
                outcome=attempt.outcome,
                status=attempt.status,
                latency_ms=attempt.latency_ms,
                started_at=attempt.ended_at - attempt.latency_ms / 1000,
            )
        )
    served = next((a for a in reversed(attempts) if a.outcome == "ok"), None)
    error = ctx.error
    outcome = ctx.outcome if error is None else "error"
    usage = ctx.usage
    return RequestRecord(
        request_id=ctx.request_id,
        started_at=ctx.wall_start,
        duration_ms=round((time.time() - ctx.wall_start) * 1000, 3),
        method=method,
        path=path,
        operation=operation_of(path),
        dialect=ctx.dialect.value,
        status=status,
        outcome=outcome,
        error_type=error_type_of(error, outcome),
        error_message=redact(getattr(error, "message", None) or str(error)) if error is not None else None,
        model_requested=ctx.model,
        deployment=ctx.deployment,
        provider=served.provider if served else (attempts[-1].provider if attempts else None),
        response_model=served.upstream_model if served else None,
        route=ctx.route,
        local=bool(served and served.local),
        stream=ctx.stream,
        tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out,
        tokens_cache_read=usage.cache_read,
        tokens_cache_write=usage.cache_write,
        cost_nano=ctx.cost_nano or 0,
        ttft_ms=None if ctx.ttft_s is None else round(ctx.ttft_s * 1000, 3),
        overhead_ms=round(ctx.overhead_ms(), 3),
        key_id=getattr(key, "id", None),
        key_hint=getattr(principal, "hint", "-") if principal else "-",
        team_id=getattr(key, "team_id", None),
        user_id=getattr(key, "user_id", None),
        tags=tuple(getattr(key, "tags", ()) or ()),
        attempts=tuple(attempts),
        cache=ctx.cache if ctx.cache_kind is not None else None,
        cache_kind=ctx.cache_kind,
        cache_lookup_ms=ctx.cache_lookup_ms,
        route_name=ctx.route_name,
        route_reason=ctx.route_reason,
        route_detail=getattr(ctx.route_decision, "detail", None),
        context=ctx.context,
        prompt=ctx.prompt if ctx.capture else None,
        response=ctx.response if ctx.capture else None,
    )
