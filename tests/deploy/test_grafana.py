"""deploy/grafana/modelyard-dashboard.json: importable, and every query uses real metrics and labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.deploy._support import DASHBOARD, promtool
from tests.deploy.promql import EXPORTED, SERIES, analyse, exported_base, problems

DS_UID = "${DS_PROMETHEUS}"
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$__interval": "1m",
    "$model": ".*",
    "$deployment": ".*",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = orjson.loads(DASHBOARD.read_bytes())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in panels(dashboard) for t in p.get("targets", [])]


def test_importable_with_a_datasource_input(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["id"] is None  # import creates it
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "prometheus")
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
            assert panel.get("targets"), f"{panel['title']}: no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DS_UID


def test_panel_ids_unique_and_layout_without_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_template_variables_for_model_and_deployment(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"model", "deployment"} <= variables.keys()
    for name in ("model", "deployment"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == DS_UID
        assert var["includeAll"] and var["multi"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert match, var["query"]
        selector, label = match.groups()
        assert label == name
        assert problems(selector) == []
        assert label in SERIES[analyse(selector).metrics.pop()]
    # Every query that can be filtered by model or deployment is.
    for title, target in targets(dashboard):
        usage = analyse(target["expr"])
        for metric in usage.metrics:
            labels = SERIES[metric]
            if "model" in labels and "deployment" not in labels:
                assert "$model" in target["expr"], title
            if "gen_ai_request_model" in labels:
                assert "$model" in target["expr"], title


def test_every_query_uses_exported_metrics_and_their_labels(dashboard: dict[str, Any]) -> None:
    found = []
    for title, target in targets(dashboard):
        found += [f"{title}: {p}" for p in problems(target["expr"], target.get("legendFormat"))]
    assert found == []


def test_every_exported_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    used = {exported_base(m) for _, t in targets(dashboard) for m in analyse(t["expr"]).metrics}
    assert sorted(EXPORTED - used) == []


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("requests/s", r"rate\(modelyard_requests_total"),
        ("errors by error_type", r"sum by \(error_type\) \(rate\(modelyard_requests_total"),
        (
            "p95 latency per model",
            r"histogram_quantile\(0\.95, sum by \(le, gen_ai_request_model\) "
            r"\(rate\(gen_ai_client_operation_duration_seconds_bucket",
        ),
        (
            "p50 TTFT per model",
            r"histogram_quantile\(0\.5, sum by \(le, gen_ai_request_model\) "
            r"\(rate\(gen_ai_server_time_to_first_token_seconds_bucket",
        ),
        ("cost/h", r"rate\(modelyard_cost_usd_total.*\* 3600"),
        ("local share of tokens", r"sum by \(local\) \(rate\(modelyard_tokens_total"),
        ("local share of routing", r"sum by \(local\) \(rate\(modelyard_route_decisions_total"),
        ("route reasons", r"sum by \(reason\)"),
        ("gateway overhead p99", r"histogram_quantile\(0\.99, .*modelyard_gateway_overhead_seconds_bucket"),
        ("breaker", r"modelyard_deployment_breaker_state"),
        ("cache hit rate", r'modelyard_cache_requests_total\{model=~"\$model",result="hit"\}'),
    ],
)
def test_the_panels_asked_for_are_there(dashboard: dict[str, Any], what: str, pattern: str) -> None:
    assert any(re.search(pattern, t["expr"]) for _, t in targets(dashboard)), what


def test_breaker_panel_names_the_states(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in panels(dashboard) if "breaker_state" in str(p.get("targets"))]
    options = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in options.items()} == {"0": "closed", "1": "half_open", "2": "open"}


def test_promtool_parses_every_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, (_, target) in enumerate(targets(dashboard)):
        expr = target["expr"]
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
