"""``POST /v1/feedback`` (and ``/feedback``): a score on an earlier request (see
:mod:`modelyard.routing.smart.feedback`). Errors come in the caller's API shape."""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import Dialect, Receive, RequestContext, Send, send_json
from modelyard.errors import NotFoundError
from modelyard.routing.smart.feedback import submit_feedback
from modelyard.state import AppState


async def feedback(
    state: AppState, body: dict[str, Any], ctx: RequestContext, receive: Receive, send: Send
) -> None:
    if "anthropic-version" in ctx.headers:
        ctx.dialect = Dialect.ANTHROPIC  # errors in the Anthropic shape for Anthropic clients
    if state.smart is None:
        raise NotFoundError("no smart routes are configured, so there is nothing to give feedback on")
    if isinstance(body.get("comment"), str):
        body = {**body, "comment": state.redact(body["comment"])}  # no key-shaped strings at rest
    answer = await submit_feedback(state.smart, state.store, ctx.principal, body)
    await send_json(send, 200, answer, ctx)


__all__ = ["feedback"]
