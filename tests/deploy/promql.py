"""The metrics modelyard exports, and a small PromQL reader that says which metrics, labels and
functions an expression uses (enough to catch a misspelt name; promtool checks the grammar)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GENAI = frozenset(
    {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"}
)
DEPLOYMENT = frozenset({"model", "deployment"})

HISTOGRAMS: dict[str, frozenset[str]] = {
    "gen_ai_client_token_usage": GENAI | {"gen_ai_token_type"},
    "gen_ai_client_operation_duration_seconds": GENAI | {"error_type"},
    "gen_ai_server_time_to_first_token_seconds": GENAI,
    "gen_ai_server_time_per_output_token_seconds": GENAI,
    "modelyard_gateway_overhead_seconds": frozenset({"operation"}),
    "modelyard_upstream_latency_seconds": frozenset({"deployment", "outcome"}),
    "modelyard_cache_lookup_seconds": frozenset({"kind"}),
}
COUNTERS: dict[str, frozenset[str]] = {
    "modelyard_requests_total": frozenset({"operation", "dialect", "status", "error_type", "model"}),
    "modelyard_attempts_total": frozenset({"deployment", "outcome"}),
    "modelyard_retries_total": frozenset({"model"}),
    "modelyard_fallbacks_total": frozenset({"model"}),
    "modelyard_route_decisions_total": frozenset({"model", "reason", "local"}),
    "modelyard_tokens_total": frozenset({"model", "deployment", "type", "local"}),
    "modelyard_cost_usd_total": frozenset({"model", "deployment", "local", "team"}),
    "modelyard_cache_requests_total": frozenset({"model", "kind", "result"}),
    "modelyard_smart_route_decisions_total": frozenset({"route", "model", "reason"}),
    "modelyard_ledger_refused_dropped_total": frozenset(),
}
GAUGES: dict[str, frozenset[str]] = {
    "modelyard_deployment_in_flight": DEPLOYMENT,
    "modelyard_deployment_queue_depth": DEPLOYMENT,
    "modelyard_deployment_breaker_state": DEPLOYMENT,
    "modelyard_budget_remaining_usd": frozenset({"scope", "scope_id", "period"}),
}
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""
BUILTIN: dict[str, frozenset[str]] = {"up": frozenset()}
"""Series Prometheus itself writes for each target."""


def series_labels() -> dict[str, frozenset[str]]:
    """Every series name a query may use → its labels (target labels included)."""
    out: dict[str, frozenset[str]] = {}
    for name, labels in HISTOGRAMS.items():
        out[f"{name}_bucket"] = labels | {"le"} | TARGET_LABELS
        out[f"{name}_sum"] = labels | TARGET_LABELS
        out[f"{name}_count"] = labels | TARGET_LABELS
    for table in (COUNTERS, GAUGES, BUILTIN):
        for name, labels in table.items():
            out[name] = labels | TARGET_LABELS
    return out


SERIES = series_labels()
EXPORTED = frozenset({*HISTOGRAMS, *COUNTERS, *GAUGES})

FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "day_of_month",
        "day_of_week",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
    ]
)
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*,?')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?<![a-zA-Z_:])\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass
class Usage:
    """What one expression refers to."""

    metrics: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    matcher_labels: dict[str, set[str]] = field(default_factory=dict)
    """Metric → the labels its selectors match on."""
    grouping_labels: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def analyse(expr: str) -> Usage:
    """Metrics, functions and label names used by a PromQL expression."""
    usage = Usage()
    # Selectors with label matchers: name{a="x", b=~"y"}.
    for match in _SELECTOR.finditer(expr):
        name, body = match.group(1), match.group(2)
        if not name:
            usage.problems.append(f"selector without a metric name: {match.group(0)!r}")
            continue
        labels = usage.matcher_labels.setdefault(name, set())
        rest = body
        for matcher in _MATCHER.finditer(body):
            labels.add(matcher.group(1))
            rest = rest.replace(matcher.group(0), "", 1)
        if rest.strip(" ,\n"):
            usage.problems.append(f"cannot read the matchers {body!r}")
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    for match in _GROUPING.finditer(text):
        usage.grouping_labels.update(x.strip() for x in match.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            usage.functions.add(word)
        else:
            usage.metrics.add(word)
    usage.metrics.update(usage.matcher_labels)
    return usage


def problems(expr: str, legend: str | None = None) -> list[str]:
    """Everything wrong with ``expr`` (and its Grafana legend) against the exported metrics."""
    usage = analyse(expr)
    found = list(usage.problems)
    for name in sorted(usage.metrics - SERIES.keys()):
        found.append(f"unknown metric {name!r}")
    for name in sorted(usage.functions - FUNCTIONS):
        found.append(f"unknown function {name!r}")
    for name, labels in usage.matcher_labels.items():
        for label in sorted(labels - SERIES.get(name, labels)):
            found.append(f"{name} has no label {label!r}")
    available = set().union(*(SERIES.get(m, frozenset()) for m in usage.metrics)) if usage.metrics else set()
    for label in sorted(usage.grouping_labels - available):
        found.append(f"grouping by {label!r}, which none of {sorted(usage.metrics)} has")
    if legend:
        for label in sorted(set(_LEGEND.findall(legend)) - available):
            found.append(f"legend uses {{{{{label}}}}}, which none of {sorted(usage.metrics)} has")
    if not usage.metrics:
        found.append("no metric at all")
    return [f"{p}  in  {expr!r}" for p in found]


def exported_base(series: str) -> str | None:
    """The exported metric a series belongs to (``x_bucket`` → ``x`` for histograms)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return series if series in EXPORTED else None
