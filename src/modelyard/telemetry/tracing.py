"""OpenTelemetry traces built from each :class:`~modelyard.telemetry.record.RequestRecord`.

One span per request (kind SERVER: the caller's call to the gateway), named per the GenAI
semantic conventions (``chat gpt-4o``), with one child span per upstream attempt (kind CLIENT:
the gateway's call to a provider), in the order they were made. Spans are built *after* the
request, with the explicit start and end times the record carries, so tracing adds nothing to
the request's own latency; a :class:`BatchSpanProcessor` exports them from its own thread and
drops spans rather than block when its queue is full.

The spans are finished :class:`~opentelemetry.sdk.trace.ReadableSpan` objects handed straight to
the span processor, not spans started and ended through a ``Tracer``: there is nothing live to
instrument, and the tracer's per-attribute validation alone cost ~25 µs a request (our
attributes are typed scalars by construction). Sampling is the ratio of ``sample_ratio``.

Prompts and answers go on spans only with ``capture_content: true`` **and** when the record
carries them (capture is enabled for the request's key or globally); they are redacted first.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from modelyard import __version__
from modelyard.config.schema import TracingConfig
from modelyard.redact import Redactor
from modelyard.store.base import NANO_PER_USD
from modelyard.telemetry.jsonlog import json_default
from modelyard.telemetry.metrics import GENAI_OPERATIONS, LabelSet
from modelyard.telemetry.record import AttemptInfo, RequestRecord

log = logging.getLogger("modelyard.telemetry")

__all__ = ["TracingSink", "otlp_exporter"]

MAX_MODEL_CHARS = 128
"""A requested model name is the caller's text: cut it before it goes on a span."""
SERVER_FAULTS = frozenset({"provider", "gateway"})
"""Error types that mark a request span as failed (a caller's or policy's 4xx is not our fault)."""
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
FAILED = Status(StatusCode.ERROR)


def otlp_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP/HTTP exporter for ``config.otlp_endpoint`` (imported only when configured)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=dict(config.otlp_headers), timeout=10)


def _ns(unix_s: float) -> int:
    return int(unix_s * 1_000_000_000)


class TracingSink:
    """A telemetry sink turning each record into a request span with attempt child spans.

    ``exporter`` defaults to OTLP/HTTP at ``config.otlp_endpoint``; tests pass an in-memory one
    (with ``batch=False`` to export as each span ends).
    """

    def __init__(
        self,
        config: TracingConfig,
        labels: LabelSet,
        redact: Redactor,
        *,
        exporter: SpanExporter | None = None,
        batch: bool = True,
    ) -> None:
        if exporter is None:
            exporter = otlp_exporter(config)
        self._config = config
        self._labels = labels
        self._redact = redact
        self._ratio = config.sample_ratio
        self._random = random.Random()
        self._resource = Resource.create({"service.name": config.service_name})
        self._scope = InstrumentationScope("modelyard", __version__)
        self.processor: SpanProcessor = (
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )

    def emit(self, record: RequestRecord) -> None:
        if self._ratio < 1.0 and self._random.random() >= self._ratio:
            return
        getrandbits = self._random.getrandbits
        trace_id = getrandbits(128)
        context = SpanContext(trace_id, getrandbits(64), is_remote=False, trace_flags=SAMPLED)
        if record.operation in GENAI_OPERATIONS and record.model_requested is not None:
            name = f"{record.operation} {self._labels.request_model(record.model_requested)}"
        else:
            name = f"{record.method} {record.operation}"
        start = _ns(record.started_at)
        status = UNSET
        if record.error_type in SERVER_FAULTS:
            status = Status(StatusCode.ERROR, self._redact(record.error_message or record.error_type or ""))
        on_end = self.processor.on_end
        for index, attempt in enumerate(record.attempts):
            child_start = _ns(attempt.started_at)
            on_end(
                ReadableSpan(
                    f"{record.operation} {attempt.upstream_model}",
                    SpanContext(trace_id, getrandbits(64), is_remote=False, trace_flags=SAMPLED),
                    parent=context,
                    resource=self._resource,
                    attributes=self._attempt_attributes(record, attempt, index),
                    kind=SpanKind.CLIENT,
                    status=UNSET if attempt.outcome in ("ok", "cancelled") else FAILED,
                    start_time=child_start,
                    end_time=child_start + int(attempt.latency_ms * 1_000_000),
                    instrumentation_scope=self._scope,
                )
            )
        on_end(
            ReadableSpan(
                name,
                context,
                parent=None,
                resource=self._resource,
                attributes=self._request_attributes(record),
                kind=SpanKind.SERVER,
                status=status,
                start_time=start,
                end_time=start + int(record.duration_ms * 1_000_000),
                instrumentation_scope=self._scope,
            )
        )

    def _request_attributes(self, record: RequestRecord) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": record.operation,
            "http.request.method": record.method,
            "http.response.status_code": record.status,
            "url.path": record.path,
            "modelyard.request_id": record.request_id,
            "modelyard.dialect": record.dialect,
            "modelyard.outcome": record.outcome,
            "modelyard.stream": record.stream,
            "modelyard.local": record.local,
            "modelyard.attempts": len(record.attempts),
            "modelyard.overhead_ms": record.overhead_ms,
            "modelyard.key_hint": record.key_hint,
        }
        optional: dict[str, Any] = {
            "gen_ai.provider.name": record.provider,
            "gen_ai.request.model": None
            if record.model_requested is None
            else self._redact(record.model_requested[:MAX_MODEL_CHARS]),
            "gen_ai.response.model": record.response_model,
            "error.type": record.error_type,
            "modelyard.route": record.route,
            "modelyard.deployment": record.deployment,
            "modelyard.team_id": record.team_id,
            "modelyard.ttft_ms": record.ttft_ms,
            "modelyard.cache": record.cache,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        if record.attempts or record.tokens_in or record.tokens_out:
            attrs["gen_ai.usage.input_tokens"] = record.tokens_in
            attrs["gen_ai.usage.output_tokens"] = record.tokens_out
            attrs["modelyard.cost_usd"] = record.cost_nano / NANO_PER_USD
        if record.tokens_cache_read:
            attrs["gen_ai.usage.cache_read.input_tokens"] = record.tokens_cache_read
        if record.tokens_cache_write:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = record.tokens_cache_write
        if self._config.capture_content:
            if record.prompt is not None:
                attrs["gen_ai.input.messages"] = self._content(record.prompt, "messages")
            if record.response is not None:
                attrs["gen_ai.output.messages"] = self._content(record.response, "choices")
        return attrs

    @staticmethod
    def _attempt_attributes(
        record: RequestRecord, attempt: AttemptInfo, index: int
    ) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": record.operation,
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.request.model": attempt.upstream_model,
            "modelyard.deployment": attempt.deployment,
            "modelyard.attempt.index": index,
            "modelyard.attempt.outcome": attempt.outcome,
            "modelyard.local": attempt.local,
        }
        if attempt.status is not None:
            attrs["http.response.status_code"] = attempt.status
        if attempt.outcome not in ("ok", "cancelled"):
            attrs["error.type"] = str(attempt.status) if attempt.status is not None else attempt.outcome
        return attrs

    def _content(self, value: Any, key: str) -> str:
        """Captured content as redacted JSON (the ``messages``/``choices`` part of a body, if any)."""
        if isinstance(value, bytes | bytearray | memoryview):
            value = json_default(value)
            with contextlib.suppress(ValueError):
                value = orjson.loads(value)
        if isinstance(value, dict) and key in value:
            value = value[key]
        if isinstance(value, str):
            return self._redact(value)
        return self._redact(orjson.dumps(value, default=json_default).decode())

    def force_flush(self) -> bool:
        return self.processor.force_flush()

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter thread (blocking: call it off the loop)."""
        self.processor.shutdown()
