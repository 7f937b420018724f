"""The PromQL reader behind the dashboard and alert checks catches what it is meant to."""

from __future__ import annotations

import pytest

from tests.deploy.promql import analyse, exported_base, problems


def test_reads_metrics_functions_and_labels() -> None:
    usage = analyse(
        "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
        '(rate(gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model=~"$model"}[$__rate_interval])))'
        " > 10 and on (gen_ai_request_model)"
        " sum by (gen_ai_request_model) (rate(modelyard_requests_total[5m])) > 0"
    )
    assert usage.metrics == {"gen_ai_client_operation_duration_seconds_bucket", "modelyard_requests_total"}
    assert usage.functions == {"histogram_quantile", "sum", "rate"}
    assert usage.grouping_labels == {"le", "gen_ai_request_model"}
    assert usage.matcher_labels == {
        "gen_ai_client_operation_duration_seconds_bucket": {"gen_ai_request_model"}
    }


def test_a_good_expression_has_no_problems() -> None:
    assert (
        problems(
            'sum by (model) (rate(modelyard_requests_total{status=~"5..", model=~"a|b"}[5m]))'
            " / sum by (model) (rate(modelyard_requests_total[5m])) > 0.05",
            legend="{{model}}",
        )
        == []
    )


@pytest.mark.parametrize(
    ("expr", "legend", "complaint"),
    [
        ("rate(modelyard_request_total[5m])", None, "unknown metric 'modelyard_request_total'"),
        ("rate(gen_ai_client_operation_duration_seconds[5m])", None, "unknown metric"),
        ('modelyard_deployment_in_flight{deploymnet="x"}', None, "has no label 'deploymnet'"),
        ("sum by (team) (modelyard_tokens_total)", None, "grouping by 'team'"),
        ("histogram_quantil(0.9, modelyard_upstream_latency_seconds_bucket)", None, "unknown function"),
        ("sum by (model) (modelyard_retries_total)", "{{deployment}}", "legend uses {{deployment}}"),
        ('{__name__="up"}', None, "selector without a metric name"),
    ],
)
def test_mistakes_are_caught(expr: str, legend: str | None, complaint: str) -> None:
    found = problems(expr, legend)
    assert any(complaint in p for p in found), found


def test_histogram_series_map_to_their_metric() -> None:
    assert exported_base("modelyard_gateway_overhead_seconds_bucket") == "modelyard_gateway_overhead_seconds"
    assert exported_base("modelyard_requests_total") == "modelyard_requests_total"
    assert exported_base("up") is None
