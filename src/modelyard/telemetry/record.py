"""The one record every finished request produces, and the hub that hands it to every sink.

Built once, after the answer (or the stream's end), from the request context: nothing on the hot
path but a dataclass construction. Sinks (metrics, traces, JSON logs, the stored request log) read
it; none may raise into the request, and none may block the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("modelyard.telemetry")


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    deployment: str
    """``provider/model`` label."""
    provider: str
    upstream_model: str
    local: bool
    outcome: str
    """``ok``, ``retryable``, ``error``, ``timeout`` or ``cancelled``."""
    status: int | None
    latency_ms: float
    started_at: float
    """Unix seconds."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    started_at: float
    """Unix seconds when the request arrived."""
    duration_ms: float
    """Until the last byte (or the failure) reached the caller."""
    method: str
    path: str
    operation: str
    """GenAI operation name: ``chat``, ``embeddings``, ``count_tokens``, ``models``, ``admin``, ``health``."""
    dialect: str
    """``openai`` or ``anthropic``: the caller's protocol."""
    status: int
    """HTTP status sent (for streams: 200, even if they ended with an error event)."""
    outcome: str
    """``ok``, ``error``, ``upstream_cut``, ``timeout``, ``client_disconnect``."""
    error_type: str | None
    """Whose fault a failure was: ``caller`` (4xx input), ``policy`` (auth, limits, budgets),
    ``provider`` (upstream errors and timeouts), ``gateway`` (our own failure); None on success."""
    error_message: str | None
    """Already redacted."""
    model_requested: str | None
    deployment: str | None
    provider: str | None
    response_model: str | None
    route: str | None
    local: bool
    stream: bool
    tokens_in: int
    tokens_out: int
    tokens_cache_read: int
    tokens_cache_write: int
    cost_nano: int
    ttft_ms: float | None
    overhead_ms: float
    key_id: str | None
    key_hint: str
    team_id: str | None
    user_id: str | None
    tags: tuple[str, ...]
    attempts: tuple[AttemptInfo, ...] = ()
    cache: str | None = None
    """``hit``, ``miss`` or ``bypass`` when a response cache is in play."""
    cache_kind: str | None = None
    """``exact`` or ``semantic``: the cache tier that answered or was consulted last."""
    cache_lookup_ms: float | None = None
    context: str | None = None
    """What context fitting did: fit, trimmed:<n>, summarized:<n>, fallback:<model> (routing.context)."""
    route_name: str | None = None
    """The smart route the request named (``auto``); ``model_requested`` is then its choice."""
    route_reason: str | None = None
    """Why the route chose that model (``task:extraction``, ``learned:strong``, ``target``, …)."""
    route_detail: str | None = None
    """The same with its numbers (confidence, P(strong), rules matched)."""
    prompt: Any = None
    """The request body, only when prompt capture is enabled for this key or globally."""
    response: Any = None
    """The answer text or body, only when capture is enabled."""
    extra: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    def emit(self, record: RequestRecord) -> None:
        """Take one record. Must be quick and never raise; queue anything slow."""


class TelemetryHub:
    """Fans each record out to every registered sink; a failing sink is logged, never fatal."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks = list(sinks)

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, record: RequestRecord) -> None:
        for sink in self.sinks:
            try:
                sink.emit(record)
            except Exception:  # a broken sink must not break requests
                log.exception("telemetry sink %s failed", type(sink).__name__)


def now() -> float:
    return time.time()
