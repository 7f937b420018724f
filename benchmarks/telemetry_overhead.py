#!/usr/bin/env python3
"""What each telemetry sink costs per request: ``hub.emit(record)`` timed per sink.

A realistic record (a streamed chat request on a two-deployment model that was retried once:
two attempts, tokens, cost, a route decision, ttft) is emitted through a hub holding one sink
at a time, many times (timeit, best of --repeat), after a warm-up so that every label child
exists (the steady state of a running gateway). Sinks measured:

  access_log        the text access log (the default request log), logger at INFO to /dev/null
  metrics           Prometheus counters and histograms (single-process registry)
  metrics_mp        the same in multiprocess mode (mmap files), in a child process
  json_log          the JSON request log: orjson + redaction + the non-blocking line queue
  tracing_off       tracing disabled (the default): no sink at all — nothing to time
  tracing_noexport  tracing enabled: request + 2 attempt spans built, into a BatchSpanProcessor
                    whose exporter drops them (the cost on the event loop; export is on its thread)
  all_default       metrics + access log      (log_format: text, tracing off)
  all_json          metrics + JSON log        (log_format: json, tracing off)
  all_traced        metrics + JSON log + spans

Budget (issue): metrics + logs + tracing-with-exporter-off ≤ 100 µs CPU per request.

  .venv/bin/python benchmarks/telemetry_overhead.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence

CONFIG = """
server: {master_key: env:BENCH_MASTER_KEY}
embedded_models: false
cloud_models_from_env: false
observability: {log_format: json, log_file: /dev/null}
models:
  - name: gpt-4o
    aliases: [gpt-4o-latest]
    routing: {fallbacks: [backup]}
    deployments:
      - {provider: fake, model: error-503}
      - {provider: fake, model: echo}
  - name: backup
    deployments:
      - {provider: fake, model: echo}
"""


def realistic_record():  # type: ignore[no-untyped-def]
    from modelyard.telemetry.record import AttemptInfo, RequestRecord

    now = time.time()
    return RequestRecord(
        request_id="req_" + "ab" * 12,
        started_at=now,
        duration_ms=812.4,
        method="POST",
        path="/v1/chat/completions",
        operation="chat",
        dialect="openai",
        status=200,
        outcome="ok",
        error_type=None,
        error_message=None,
        model_requested="gpt-4o",
        deployment="fake/echo",
        provider="fake",
        response_model="echo",
        route="primary",
        local=False,
        stream=True,
        tokens_in=412,
        tokens_out=96,
        tokens_cache_read=128,
        tokens_cache_write=0,
        cost_nano=1_234_567,
        ttft_ms=210.7,
        overhead_ms=0.41,
        key_id="key_0123456789abcdef0123",
        key_hint="myd_…Ab12",
        team_id="ml",
        user_id="alice",
        tags=("prod",),
        attempts=(
            AttemptInfo("fake/error-503", "fake", "error-503", False, "retryable", 503, 3.1, now),
            AttemptInfo("fake/echo", "fake", "echo", False, "ok", 200, 805.2, now + 0.004),
        ),
    )


def measure(sinks: Sequence[object], number: int, repeat: int) -> float:
    """Best µs per emit over ``repeat`` runs of ``number`` emits (after a warm-up)."""
    from modelyard.telemetry.record import TelemetryHub

    hub = TelemetryHub(sinks)  # type: ignore[arg-type]
    record = realistic_record()
    for _ in range(1000):
        hub.emit(record)
    best = min(timeit.repeat(lambda: hub.emit(record), number=number, repeat=repeat))
    return best / number * 1e6


async def run(number: int, repeat: int) -> dict[str, float]:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from modelyard.config.load import load_config
    from modelyard.config.schema import TracingConfig
    from modelyard.state import AppState
    from modelyard.telemetry.access_log import AccessLog
    from modelyard.telemetry.tracing import TracingSink

    class DropExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    os.environ["BENCH_MASTER_KEY"] = "mk-bench-0123456789abcdef"
    config = load_config(CONFIG, source="bench")
    state = AppState.build(config)
    obs = state.observability
    assert obs.writer is not None and obs.json_log is not None
    obs.writer.start()
    access = AccessLog()
    tracing = TracingSink(TracingConfig(enabled=True), obs.labels, obs.redact, exporter=DropExporter())
    results = {
        "access_log": measure([access], number, repeat),
        "metrics": measure([obs.metrics_sink], number, repeat),
        "json_log": measure([obs.json_log], number, repeat),
        "tracing_off": 0.0,
        "tracing_noexport": measure([tracing], number, repeat),
        "all_default": measure([obs.metrics_sink, access], number, repeat),
        "all_json": measure([obs.metrics_sink, obs.json_log], number, repeat),
        "all_traced": measure([obs.metrics_sink, obs.json_log, tracing], number, repeat),
    }
    if obs.writer.dropped:
        print(f"(json log: {obs.writer.dropped} lines dropped by the full queue while timing)")
    tracing.shutdown()
    obs.writer.stop()
    await state.session.close()
    return results


def multiprocess_child(number: int, repeat: int) -> float:
    """Metrics sink in multiprocess mode (must run in a process that set the dir before import)."""
    results = asyncio.run(_mp(number, repeat))
    return results


async def _mp(number: int, repeat: int) -> float:
    from modelyard.config.load import load_config
    from modelyard.state import AppState

    os.environ["BENCH_MASTER_KEY"] = "mk-bench-0123456789abcdef"
    state = AppState.build(load_config(CONFIG, source="bench"))
    assert state.observability.multiprocess
    result = measure([state.observability.metrics_sink], number, repeat)
    await state.session.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="emits per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (best is reported)")
    parser.add_argument("--mp-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))
    if args.mp_child:
        print(f"{multiprocess_child(args.number, args.repeat):.2f}")
        return
    results = asyncio.run(run(args.number, args.repeat))
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-metrics-") as directory:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mp-child",
                "--number",
                str(args.number),
                "--repeat",
                str(args.repeat),
            ],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
            capture_output=True,
            text=True,
            check=True,
        )
        results["metrics_mp"] = float(out.stdout.strip().splitlines()[-1])
    print(f"{'sink':<18} {'µs/request':>10}")
    for name, micros in results.items():
        print(f"{name:<18} {micros:>10.2f}")
    budget = results["all_traced"]
    print(f"\nmetrics + JSON log + spans (exporter dropping): {budget:.1f} µs (budget 100 µs)")


if __name__ == "__main__":
    main()
