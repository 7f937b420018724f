"""What the running gateway holds for observability: the sinks it registers on the telemetry hub,
the Prometheus registry ``GET /metrics`` renders, and the background work behind them.

Built by :meth:`Observability.build` in ``AppState.build`` from ``config.observability``;
:meth:`start` (in ``AppState.open``, once the store is open) starts the budget refresher, the
multiprocess live-state mirror and the JSON log writer; :meth:`aclose` stops them and flushes
queued spans and log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelyard.config.load import RuntimeConfig
from modelyard.config.schema import ObservabilityConfig
from modelyard.redact import Redactor
from modelyard.routing.router import Router
from modelyard.store.base import Store
from modelyard.telemetry.access_log import AccessLog
from modelyard.telemetry.jsonlog import JsonLogSink, LineWriter
from modelyard.telemetry.metrics import (
    BudgetCollector,
    GatewayMetrics,
    LabelSet,
    LiveStateCollector,
    LiveStateMirror,
    MetricsSink,
)
from modelyard.telemetry.multiproc import multiprocess_enabled
from modelyard.telemetry.record import Sink
from modelyard.telemetry.redaction import TelemetryRedactor
from modelyard.telemetry.tracing import TracingSink

log = logging.getLogger("modelyard.telemetry")

__all__ = ["METRICS_CONTENT_TYPE", "Observability"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
"""Prometheus text format 0.0.4: what every scraper reads."""


class Observability:
    """Metrics registry and sinks of one gateway process (see the module docstring)."""

    def __init__(
        self,
        config: ObservabilityConfig,
        *,
        labels: LabelSet,
        router: Router,
        store: Store,
        redact: TelemetryRedactor,
        multiprocess: bool,
    ) -> None:
        self.config = config
        self.labels = labels
        self.redact = redact
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        self.budgets = BudgetCollector(store, config.budget_refresh_s)
        live = LiveStateCollector(router)
        self._mirror: LiveStateMirror | None = None
        if multiprocess:
            # Values live in files shared by the workers; the live gauges are mirrored into them.
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            self.metrics = GatewayMetrics(None)
            self._mirror = LiveStateMirror(live, self.metrics.live_gauges())
        else:
            self.metrics = GatewayMetrics(self.registry)
            self.registry.register(live)
        self.registry.register(self.budgets)
        self.metrics_sink = MetricsSink(self.metrics, labels)
        self.writer: LineWriter | None = None
        self.json_log: JsonLogSink | None = None
        if config.log_format == "json":
            self.writer = LineWriter(config.log_file)
            self.json_log = JsonLogSink(self.writer, redact)
        self.tracing: TracingSink | None = None
        tracing = config.tracing
        if tracing.enabled and tracing.otlp_endpoint:
            self.tracing = TracingSink(tracing, labels, redact)
        elif tracing.enabled:
            log.warning("observability.tracing is enabled without an otlp_endpoint: no spans are exported")
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def build(cls, config: RuntimeConfig, router: Router, store: Store, redact: Redactor) -> Observability:
        obs = config.observability
        secrets = [*getattr(redact, "_secrets", ()), *obs.tracing.otlp_headers.values()]
        return cls(
            obs,
            labels=LabelSet(config, router),
            router=router,
            store=store,
            redact=TelemetryRedactor(secrets),
            multiprocess=multiprocess_enabled(),
        )

    def sinks(self) -> list[Sink]:
        """The hub's sinks, cheapest first: metrics, then the request log, then traces."""
        sinks: list[Sink] = [self.metrics_sink]
        sinks.append(self.json_log if self.json_log is not None else AccessLog())
        if self.tracing is not None:
            sinks.append(self.tracing)
        return sinks

    async def start(self) -> None:
        """Start the background work (call with the store open, on the serving loop)."""
        if self.writer is not None:
            self.writer.start()
        self._tasks.append(asyncio.create_task(self.budgets.run(), name="modelyard-budget-metrics"))
        if self._mirror is not None:
            self._tasks.append(asyncio.create_task(self._mirror.run(), name="modelyard-live-metrics"))

    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric (for ``GET /metrics``)."""
        if self.multiprocess:
            # Reading every worker's files is disk work: keep it off the event loop. (The budget
            # snapshot it also reads is an immutable tuple, safe from another thread.)
            return await asyncio.to_thread(generate_latest, self.registry)
        # One process: the live-state collector reads the router, which only the loop may touch.
        return generate_latest(self.registry)

    async def aclose(self) -> None:
        """Stop the background work; write out queued log lines and spans."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        if self.multiprocess:
            with contextlib.suppress(OSError):
                # This worker's live gauges must not outlive it (its counters stay in the sums).
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
