"""Prometheus metrics: every metric modelyard exports is defined here, once.

Two kinds:

* **Per request** (:class:`GatewayMetrics`, fed by :class:`MetricsSink` from each
  :class:`~modelyard.telemetry.record.RequestRecord`): the OpenTelemetry GenAI client/server
  metrics under their Prometheus names (``gen_ai_client_token_usage``, …) and modelyard's own
  ``modelyard_*`` counters and histograms.
* **Live state**, read at scrape time so it is exact and costs nothing per request
  (:class:`LiveStateCollector`: in-flight, queue depth and breaker state per deployment;
  :class:`BudgetCollector`: remaining budget, from a snapshot a background task refreshes).

Labels are bounded: model names are the configured ones (anything else is ``_other``), a label
with no value is the empty string (which Prometheus treats as absent), and nothing a caller
chooses freely — request ids, key ids, user text — becomes a label.

Several worker processes: prometheus_client's multiprocess mode (see
:mod:`modelyard.telemetry.multiproc`) keeps each worker's counters in files that any worker sums
at scrape time; the live-state gauges are then mirrored into ``livesum``/``livemax`` gauges by
each worker every second (:class:`LiveStateMirror`), as one worker cannot read another's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from modelyard.config.load import RuntimeConfig
from modelyard.routing.breaker import BreakerState
from modelyard.routing.router import Router
from modelyard.store.base import NANO_PER_USD, BudgetState, Store
from modelyard.telemetry.record import RequestRecord

log = logging.getLogger("modelyard.telemetry")

__all__ = [
    "BudgetCollector",
    "GatewayMetrics",
    "LabelSet",
    "LiveStateCollector",
    "LiveStateMirror",
    "MetricsSink",
]

OTHER = "_other"
"""Label value standing for any model name that is not configured (keeps cardinality bounded)."""

GENAI_OPERATIONS = frozenset({"chat", "embeddings"})
"""Operations the GenAI semantic-convention metrics describe."""

# Bucket boundaries: the GenAI ones are those the OpenTelemetry semantic conventions advise.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
OPERATION_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TIME_PER_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""Gateway overhead is sub-millisecond when healthy: fine buckets from 50 µs."""
CACHE_LOOKUP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

GENAI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)

# Live-state gauges: names and labels shared by the scrape-time collector and the multiprocess
# mirror, so both expose exactly the same series.
IN_FLIGHT = "modelyard_deployment_in_flight"
QUEUE_DEPTH = "modelyard_deployment_queue_depth"
BREAKER_STATE = "modelyard_deployment_breaker_state"
BUDGET_REMAINING = "modelyard_budget_remaining_usd"
DEPLOYMENT_LABELS = ("model", "deployment")
BUDGET_LABELS = ("scope", "scope_id", "period")
LIVE_HELP = {
    IN_FLIGHT: "Requests being served by the deployment now (its concurrency slots taken).",
    QUEUE_DEPTH: "Requests waiting in the deployment's admission queue now.",
    BREAKER_STATE: "Circuit breaker of the deployment: 0 closed, 1 half_open, 2 open.",
}
BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class GatewayMetrics:
    """The per-request metrics, registered on ``registry`` (None in multiprocess mode, where the
    values live in files that :class:`prometheus_client.multiprocess.MultiProcessCollector` reads)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        # -- OpenTelemetry GenAI semantic conventions ------------------------------------------
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request (gen_ai.client.token.usage), by token type input|output.",
            (*GENAI_LABELS, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of a GenAI operation as the caller saw it (gen_ai.client.operation.duration).",
            (*GENAI_LABELS, "error_type"),
            buckets=OPERATION_DURATION_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first token of a streamed answer (gen_ai.server.time_to_first_token).",
            GENAI_LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, streams (gen_ai.server.time_per_output_token).",
            GENAI_LABELS,
            buckets=TIME_PER_TOKEN_BUCKETS,
            registry=r,
        )
        # -- modelyard's own ---------------------------------------------------------------------
        self.requests = Counter(
            "modelyard_requests_total",
            "Finished requests. error_type: caller|policy|provider|gateway, empty on success.",
            ("operation", "dialect", "status", "error_type", "model"),
            registry=r,
        )
        self.gateway_overhead = Histogram(
            "modelyard_gateway_overhead_seconds",
            "Time the gateway itself spent on a request (total minus upstream time).",
            ("operation",),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "modelyard_upstream_latency_seconds",
            "Latency of each upstream attempt, by deployment and outcome.",
            ("deployment", "outcome"),
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "modelyard_attempts_total",
            "Upstream attempts: outcome ok|retryable|error|timeout|cancelled|cut|saturated.",
            ("deployment", "outcome"),
            registry=r,
        )
        self.retries = Counter(
            "modelyard_retries_total",
            "Attempts after the first that went to the requested model's own deployments.",
            ("model",),
            registry=r,
        )
        self.fallbacks = Counter(
            "modelyard_fallbacks_total",
            "Attempts that went to another (fallback) model's deployments.",
            ("model",),
            registry=r,
        )
        self.route_decisions = Counter(
            "modelyard_route_decisions_total",
            "Why the serving deployment was chosen: primary, spill:<why>, retry, fallback:<model>, …",
            ("model", "reason", "local"),
            registry=r,
        )
        self.tokens = Counter(
            "modelyard_tokens_total",
            "Tokens, by type input|output|cache_read|cache_write.",
            ("model", "deployment", "type", "local"),
            registry=r,
        )
        self.cost = Counter(
            "modelyard_cost_usd_total",
            "What requests cost, US dollars (local deployments at their configured hardware cost).",
            ("model", "deployment", "local", "team"),
            registry=r,
        )
        self.cache_requests = Counter(
            "modelyard_cache_requests_total",
            "Response cache lookups, by model, kind exact|semantic and result hit|miss|bypass.",
            ("model", "kind", "result"),
            registry=r,
        )
        self.cache_lookup = Histogram(
            "modelyard_cache_lookup_seconds",
            "Time to look a request up in the response cache (embedding included for semantic).",
            ("kind",),
            buckets=CACHE_LOOKUP_BUCKETS,
            registry=r,
        )
        self.ledger_refused_dropped = Counter(
            "modelyard_ledger_refused_dropped_total",
            "Refused requests (401/403/429… before any upstream attempt) not written to the ledger "
            "because its refused-row queue was full; they are still in the request log. Should stay 0.",
            registry=r,
        )
        self.leases = Counter(
            "modelyard_leases_total",
            "Leases this process took (storage.reservations: leased), by kind budget|rate_limit.",
            ("kind",),
            registry=r,
        )
        self.lease_waits = Counter(
            "modelyard_lease_waits_total",
            "Requests that waited for a lease to be taken (a database commit or a Redis call) instead "
            "of being admitted from one in memory, by kind budget|rate_limit. Near 0 in steady traffic "
            "(the next lease is taken ahead); it grows near a budget's or a limit's end.",
            ("kind",),
            registry=r,
        )
        self.smart_route_decisions = Counter(
            "modelyard_smart_route_decisions_total",
            "Smart-route decisions (model: auto …): the route, the model it chose and why "
            "(task:<name>, fallback, learned:strong|weak, target, best, explore, embeddings; +rule:<names>).",
            ("route", "model", "reason"),
            registry=r,
        )

    def live_gauges(self) -> dict[str, Gauge]:
        """The live-state gauges as multiprocess gauges, for :class:`LiveStateMirror` (only built
        in multiprocess mode: a worker's in-flight counts add up, a breaker shows its worst)."""
        return {
            name: Gauge(
                name,
                help_text,
                DEPLOYMENT_LABELS,
                registry=None,
                multiprocess_mode="livemax" if name == BREAKER_STATE else "livesum",
            )
            for name, help_text in LIVE_HELP.items()
        }


class LabelSet:
    """Maps what a record says to bounded label values, from the configured models."""

    def __init__(self, config: RuntimeConfig, router: Router) -> None:
        self._canonical: dict[str, str] = {}
        for model in config.models:
            for name in (model.name, *model.aliases):
                self._canonical[name] = model.name
        self._members: dict[str, frozenset[str]] = {}
        self._deployments: set[str] = set()
        for group in router.groups():
            labels = frozenset(d.label for d in group.deployments)
            self._members[group.name] = labels
            self._deployments |= labels

    def model(self, requested: str | None) -> str:
        """The configured (canonical) model name; ``""`` for none, ``_other`` for an unknown one."""
        if requested is None:
            return ""
        return self._canonical.get(requested, OTHER)

    def request_model(self, requested: str | None) -> str:
        """The name as requested (an alias stays an alias) when configured, else ``_other``."""
        if requested is None:
            return ""
        return requested if requested in self._canonical else OTHER

    def deployment(self, label: str | None) -> str:
        if label is None:
            return ""
        return label if label in self._deployments else OTHER

    def members(self, model: str) -> frozenset[str]:
        """Deployment labels of a (canonical) model."""
        return self._members.get(model, frozenset())


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


MAX_CHILDREN = 100_000
"""Labelled children kept for reuse (labels are bounded, so this is a guard, never reached)."""


class MetricsSink:
    """A telemetry sink updating :class:`GatewayMetrics` from each finished request.

    Labelled children are looked up once and kept: ``metric.labels(...)`` validates and locks on
    every call, a dictionary lookup does not (this halves the sink's cost).
    """

    def __init__(self, metrics: GatewayMetrics, labels: LabelSet) -> None:
        self.metrics = metrics
        self.labels = labels
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < MAX_CHILDREN:
                self._children[key] = child
        return child

    def emit(self, record: RequestRecord) -> None:
        m = self.metrics
        child = self._child
        names = self.labels
        op = record.operation
        model = names.model(record.model_requested)
        error_type = record.error_type or ""
        local = _bool(record.local)
        child(m.requests, op, record.dialect, str(record.status), error_type, model).inc()
        child(m.gateway_overhead, op).observe(record.overhead_ms / 1000)

        if record.attempts:
            own = names.members(model)
            retries = fallbacks = 0
            for index, attempt in enumerate(record.attempts):
                deployment = names.deployment(attempt.deployment)
                child(m.attempts, deployment, attempt.outcome).inc()
                child(m.upstream_latency, deployment, attempt.outcome).observe(attempt.latency_ms / 1000)
                if attempt.deployment not in own:
                    fallbacks += 1
                elif index:
                    retries += 1
            if retries:
                child(m.retries, model).inc(retries)
            if fallbacks:
                child(m.fallbacks, model).inc(fallbacks)
        if record.route is not None:
            child(m.route_decisions, model, record.route, local).inc()

        if op in GENAI_OPERATIONS and record.model_requested is not None:
            provider = record.provider or ""
            request_model = names.request_model(record.model_requested)
            response_model = record.response_model or ""
            genai = (op, provider, request_model, response_model)
            child(m.operation_duration, *genai, error_type).observe(record.duration_ms / 1000)
            if record.response_model is not None:
                child(m.token_usage, *genai, "input").observe(record.tokens_in)
                if op == "chat":
                    child(m.token_usage, *genai, "output").observe(record.tokens_out)
            if record.ttft_ms is not None:
                child(m.time_to_first_token, *genai).observe(record.ttft_ms / 1000)
                if record.tokens_out > 1:
                    after_first = max(0.0, record.duration_ms - record.ttft_ms) / 1000
                    child(m.time_per_output_token, *genai).observe(after_first / (record.tokens_out - 1))

        deployment = names.deployment(record.deployment)
        if record.response_model is not None:
            # Only answered requests: a failed one's usage is the admission estimate, not tokens used.
            for kind, count in (
                ("input", record.tokens_in),
                ("output", record.tokens_out),
                ("cache_read", record.tokens_cache_read),
                ("cache_write", record.tokens_cache_write),
            ):
                if count:
                    child(m.tokens, model, deployment, kind, local).inc(count)
        if record.cost_nano:
            child(m.cost, model, deployment, local, record.team_id or "").inc(record.cost_nano / NANO_PER_USD)
        if record.cache is not None and record.cache_kind is not None:
            child(m.cache_requests, model, record.cache_kind, record.cache).inc()
            if record.cache_lookup_ms is not None and record.cache != "bypass":
                child(m.cache_lookup, record.cache_kind).observe(record.cache_lookup_ms / 1000)
        if record.route_name is not None:
            child(m.smart_route_decisions, record.route_name, model, record.route_reason or "").inc()


class LiveStateCollector:
    """In-flight, queue depth and breaker state of every deployment, read when scraped."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, text, labels=DEPLOYMENT_LABELS) for name, text in LIVE_HELP.items()]

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, text, labels=DEPLOYMENT_LABELS) for name, text in LIVE_HELP.items()
        }
        now = time.monotonic()
        for group in self._router.groups():
            for dep in group.deployments:
                labels = [group.name, dep.label]
                families[IN_FLIGHT].add_metric(labels, dep.in_flight)
                families[QUEUE_DEPTH].add_metric(labels, dep.queued)
                families[BREAKER_STATE].add_metric(labels, BREAKER_VALUES[dep.breaker.state(now)])
        yield from families.values()


class LiveStateMirror:
    """Multiprocess mode: copies this worker's live state into ``live*`` multiprocess gauges every
    ``interval_s``, so that the worker answering a scrape reports all of them."""

    def __init__(
        self, collector: LiveStateCollector, gauges: dict[str, Gauge], interval_s: float = 1.0
    ) -> None:
        self._collector = collector
        self._gauges = gauges
        self._interval_s = interval_s

    def update(self) -> None:
        for family in self._collector.collect():
            gauge = self._gauges[family.name]
            for sample in family.samples:
                gauge.labels(**sample.labels).set(sample.value)

    async def run(self) -> None:
        while True:
            try:
                self.update()
            except Exception:  # telemetry must never take the worker down
                log.exception("mirroring live deployment state into metrics failed")
            await asyncio.sleep(self._interval_s)


class BudgetCollector:
    """``modelyard_budget_remaining_usd`` from a snapshot of the store's budgets, refreshed by
    :meth:`run` every ``interval_s`` (never on the scrape path). The store is shared by every
    worker, so any worker's snapshot is the whole truth."""

    def __init__(self, store: Store, interval_s: float = 15.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._snapshot: Sequence[BudgetState] = ()
        self.refreshed = asyncio.Event()
        """Set after each refresh (tests wait on it)."""

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            BUDGET_REMAINING,
            "Budget left in the current period (limit − spend − reserved), USD; refreshed every 15 s.",
            labels=BUDGET_LABELS,
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for state in self._snapshot:
            spec = state.spec
            remaining = max(0, spec.limit_nano - state.spend_nano - state.reserved_nano)
            family.add_metric([spec.scope.value, spec.scope_id, spec.period.value], remaining / NANO_PER_USD)
        yield family

    async def refresh(self) -> None:
        self._snapshot = tuple(await self._store.budgets())
        self.refreshed.set()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("refreshing budget metrics failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval_s)
