"""Spans built from request records: GenAI attributes, request → attempt structure, content capture,
and the OTLP/HTTP exporter against a loopback collector."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelyard.config.schema import TracingConfig
from modelyard.telemetry.tracing import TracingSink
from tests.fakes import GatewayServer
from tests.telemetry._support import chat, config_text, running_gateway

CAPTURE = "request_log: {enabled: true, capture_prompts: true}\n"


def add_tracer(gw: GatewayServer, *, capture: bool) -> InMemorySpanExporter:
    state = gw.app.state
    assert state is not None
    exporter = InMemorySpanExporter()
    sink = TracingSink(
        TracingConfig(enabled=True, capture_content=capture),
        state.observability.labels,
        state.observability.redact,
        exporter=exporter,
        batch=False,
    )
    state.telemetry.add(sink)
    return exporter


def wait_spans(exporter: InMemorySpanExporter, count: int) -> Sequence[ReadableSpan]:
    """The record is emitted just after the answer is sent: wait for its spans."""
    deadline = time.monotonic() + 5
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    spans = exporter.get_finished_spans()
    assert len(spans) == count, [s.name for s in spans]
    return spans


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[GatewayServer, InMemorySpanExporter, InMemorySpanExporter]]:
    with running_gateway(config_text() + CAPTURE) as gw:
        yield gw, add_tracer(gw, capture=False), add_tracer(gw, capture=True)


def test_request_and_attempt_spans(
    traced: tuple[GatewayServer, InMemorySpanExporter, InMemorySpanExporter],
) -> None:
    gw, plain, captured = traced
    plain.clear()
    captured.clear()
    response = chat(gw.url, "flaky")
    assert response.status_code == 200
    spans = wait_spans(plain, 3)
    (request,) = [s for s in spans if s.parent is None]
    attempts = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time or 0)
    assert request.name == "chat flaky"
    assert request.kind is SpanKind.SERVER
    attrs = dict(request.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "fake"
    assert attrs["gen_ai.request.model"] == "flaky"
    assert attrs["gen_ai.response.model"] == "echo"
    usage = response.json()["usage"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["modelyard.route"] == "primary"
    assert attrs["modelyard.request_id"] == response.headers["x-request-id"]
    assert attrs["modelyard.cost_usd"] == 0.0
    assert "error.type" not in attrs
    assert request.status.status_code is StatusCode.UNSET

    assert [s.name for s in attempts] == ["chat error-503", "chat echo"]
    assert request.context is not None
    for index, span in enumerate(attempts):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context is not None and span.context.trace_id == request.context.trace_id
        assert span.attributes is not None and span.attributes["modelyard.attempt.index"] == index
        assert request.start_time is not None and request.end_time is not None
        assert span.start_time is not None and span.end_time is not None
        assert request.start_time <= span.start_time <= span.end_time <= request.end_time + 1_000_000
    first, second = (dict(s.attributes or {}) for s in attempts)
    assert first["modelyard.deployment"] == "fake/error-503"
    assert first["modelyard.attempt.outcome"] == "retryable"
    assert first["http.response.status_code"] == 503
    assert first["error.type"] == "503"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert second["modelyard.deployment"] == "fake/echo"
    assert second["modelyard.attempt.outcome"] == "ok"
    assert "error.type" not in second


def test_failed_request_span(
    traced: tuple[GatewayServer, InMemorySpanExporter, InMemorySpanExporter],
) -> None:
    gw, plain, _ = traced
    plain.clear()
    assert chat(gw.url, "boom").status_code == 503
    spans = wait_spans(plain, 2)
    (request,) = [s for s in spans if s.parent is None]
    assert request.attributes is not None
    assert request.attributes["error.type"] == "provider"
    assert request.attributes["http.response.status_code"] == 503
    assert request.status.status_code is StatusCode.ERROR

    plain.clear()
    assert chat(gw.url, "no-such-model").status_code == 404
    (unknown,) = wait_spans(plain, 1)
    assert unknown.name == "chat _other"  # the caller's text never names a span
    assert unknown.attributes is not None and unknown.attributes["error.type"] == "caller"
    assert unknown.status.status_code is StatusCode.UNSET  # a caller's mistake is not our failure


def test_content_only_when_captured(
    traced: tuple[GatewayServer, InMemorySpanExporter, InMemorySpanExporter],
) -> None:
    gw, plain, captured = traced
    plain.clear()
    captured.clear()
    assert chat(gw.url, "echo").status_code == 200
    (without,) = [s for s in wait_spans(plain, 2) if s.parent is None]
    (with_content,) = [s for s in wait_spans(captured, 2) if s.parent is None]
    assert without.parent is None
    assert not any("hello there" in str(v) for v in (without.attributes or {}).values())
    assert "gen_ai.input.messages" not in (without.attributes or {})
    attrs = dict(with_content.attributes or {})
    assert "hello there" in str(attrs["gen_ai.input.messages"])
    assert "echo: hello there" in str(attrs["gen_ai.output.messages"])


def test_no_content_when_the_record_carries_none() -> None:
    """capture_content is on, but request capture is off (the default): no content on spans."""
    with running_gateway(config_text()) as gw:
        exporter = add_tracer(gw, capture=True)
        assert chat(gw.url, "echo").status_code == 200
        spans = wait_spans(exporter, 2)
        for span in spans:
            assert not any("hello there" in str(v) for v in (span.attributes or {}).values())


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_http_export_from_config() -> None:
    """tracing.enabled + otlp_endpoint: spans reach an OTLP/HTTP collector (here on loopback),
    with the configured header (a secret reference) and service name."""
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    _Collector.received.clear()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    observability = (
        "tracing:\n"
        "  enabled: true\n"
        f"  otlp_endpoint: {endpoint}\n"
        "  otlp_headers: {x-collector-token: env:TEST_MASTER_KEY}\n"
        "  service_name: gateway-under-test\n"
    )
    try:
        with running_gateway(config_text(observability=observability)) as gw:
            assert chat(gw.url, "flaky").status_code == 200
            time.sleep(0.1)  # the record is emitted after the answer; stopping flushes the batch
        assert _Collector.received, "no export reached the collector"
        path, headers, body = _Collector.received[0]
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-collector-token"].startswith("mk-gateway-")
        request = ExportTraceServiceRequest.FromString(body)
        (resource_spans,) = request.resource_spans
        service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
        assert service == "gateway-under-test"
        names = sorted(s.name for scope in resource_spans.scope_spans for s in scope.spans)
        assert names == ["chat echo", "chat error-503", "chat flaky"]
    finally:
        collector.shutdown()
        collector.server_close()
