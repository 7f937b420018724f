"""The response cache's steps inside ``serve_chat``: look up (after admission), answer a hit in
place of the upstream, store a miss's answer once it was sent.

A hit goes through the same path as an upstream answer — headers, conversation tracking, request
log, settlement — with one ledger row whose deployment is ``cache:exact`` or ``cache:semantic``,
zero tokens and zero cost, so spend reports tell hits from upstream calls (``route_reason`` too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from modelyard.api.asgi import RequestContext
from modelyard.cache.service import CacheLookup, ResponseCache, directives
from modelyard.providers.base import WireProtocol
from modelyard.routing.chat import StreamOutcome
from modelyard.routing.router import AttemptRecord
from modelyard.routing.usage import Usage

__all__ = ["cache_lookup", "cache_store", "cache_tee", "cached_answer", "cached_stream", "is_hit"]


async def cache_lookup(
    cache: ResponseCache | None, client: WireProtocol, body: dict[str, Any], ctx: RequestContext, model: str
) -> CacheLookup | None:
    """The cache's verdict for this request (None when no cache applies to ``model``); sets the
    context's cache fields (response header, request record, metrics)."""
    found = None if cache is None else await cache.lookup(model, client, body, ctx.principal, ctx.headers)
    if found is None:
        directives(ctx.headers, body)  # a bad `cache` body field is a 400 even with no cache
        ctx.cache = "bypass"
        return None
    ctx.cache, ctx.cache_kind, ctx.cache_lookup_ms = found.result, found.kind, found.lookup_ms
    return found


def is_hit(found: CacheLookup | None) -> bool:
    return found is not None and found.result == "hit"


def _served_by_cache(found: CacheLookup, ctx: RequestContext) -> None:
    label = f"cache:{found.kind}"
    ctx.deployment = ctx.route = label
    ctx.attempt_log = [AttemptRecord(label, "ok", 200, round(found.lookup_ms, 3))]
    ctx.usage = Usage(reported=True)  # nothing was used upstream


def cached_answer(found: CacheLookup | None, ctx: RequestContext) -> bytes:
    """A hit's answer (a fresh id; see :mod:`modelyard.cache.replay`)."""
    assert found is not None and found.answer is not None
    _served_by_cache(found, ctx)
    return found.answer


async def _replayed(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def cached_stream(
    found: CacheLookup | None, client: WireProtocol, body: dict[str, Any], ctx: RequestContext
) -> StreamOutcome:
    """A hit's answer as a stream of SSE events in the caller's protocol."""
    assert found is not None
    _served_by_cache(found, ctx)
    events = found.replay(client, body)
    return StreamOutcome(events[0], _replayed(events[1:]))


def cache_store(
    cache: ResponseCache | None,
    found: CacheLookup | None,
    client: WireProtocol,
    answer: bytes,
    ctx: RequestContext,
) -> None:
    """After a miss's plain answer was sent: store it (in the background)."""
    if cache is not None and found is not None and found.result != "hit":
        cache.store(found, client, answer, ctx.usage)


def _nothing(ctx: RequestContext) -> None:
    return None


def cache_tee(
    cache: ResponseCache | None,
    found: CacheLookup | None,
    client: WireProtocol,
    first: bytes,
    rest: AsyncIterator[bytes],
) -> tuple[AsyncIterator[bytes], Callable[[RequestContext], None]]:
    """For a miss's stream: (the stream to send on, what to call once it was sent completely).
    The answer is stored only when the stream ended cleanly (outcome ``ok``, finish reason seen)."""
    if cache is None or found is None or found.result == "hit" or not found.write:
        return rest, _nothing
    teed, completed = cache.tee(found, client, first, rest)

    def done(ctx: RequestContext) -> None:
        if ctx.outcome == "ok":
            completed(ctx.usage)

    return teed, done
