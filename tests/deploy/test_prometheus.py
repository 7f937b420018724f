"""deploy/prometheus: the alert rules (structure, metrics, labels, promtool unit tests) and the
scrape config example."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy._support import ALERTS, ALERTS_TEST, PROMETHEUS, promtool
from tests.deploy.promql import SERIES, analyse, problems

RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
WANTED = {
    "ModelyardHighErrorRate": ("modelyard_requests_total", 'status=~"5.."', "[5m]"),
    "ModelyardLatencySLO": ("gen_ai_client_operation_duration_seconds_bucket", "histogram_quantile(0.95"),
    "ModelyardBudgetLow": ("modelyard_budget_remaining_usd <",),
    "ModelyardBudgetExhaustsWithinHour": ("predict_linear(modelyard_budget_remaining_usd", "3600"),
    "ModelyardBreakerOpen": ("modelyard_deployment_breaker_state > 0",),
    "ModelyardQueueGrowing": ("deriv(modelyard_deployment_queue_depth[10m]) > 0", "queue_depth > 2"),
}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict) and set(data) == {"groups"}
    found: list[dict[str, Any]] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        assert isinstance(group["name"], str) and group["rules"]
        found += group["rules"]
    return found


def test_rule_groups_have_the_prometheus_structure(rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= RULE_KEYS and {"alert", "expr"} <= set(rule), rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert isinstance(rule["expr"], str)
        assert DURATION.match(str(rule.get("for", "0s"))), rule["for"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert all(isinstance(v, str) for v in rule["labels"].values())
        assert {"summary", "description"} <= set(rule["annotations"])


def test_the_alerts_asked_for_are_there(rules: list[dict[str, Any]]) -> None:
    by_name = {r["alert"]: r for r in rules}
    for name, fragments in WANTED.items():
        expr = " ".join(by_name[name]["expr"].split())
        for fragment in fragments:
            assert fragment in expr, (name, fragment)
    assert by_name["ModelyardBreakerOpen"]["for"] == "1m"
    assert by_name["ModelyardQueueGrowing"]["for"] == "10m"
    assert by_name["ModelyardLatencySLO"]["for"] == "10m"


def test_rules_use_exported_metrics_and_their_labels(rules: list[dict[str, Any]]) -> None:
    found = [f"{r['alert']}: {p}" for r in rules for p in problems(r["expr"])]
    assert found == []


def test_annotations_only_name_labels_the_alert_carries(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        usage = analyse(rule["expr"])
        # An aggregation keeps only its grouping labels; a bare selector keeps all of its labels.
        if usage.grouping_labels:
            carried = usage.grouping_labels - {"le"}
        else:
            carried = set().union(*(SERIES[m] for m in usage.metrics))
        text = " ".join(rule["annotations"].values())
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in carried, (rule["alert"], label)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_each_alert(rules: list[dict[str, Any]]) -> None:
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert tested == {r["alert"] for r in rules}
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_example() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "modelyard"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"]
    result = promtool("check", "config", PROMETHEUS.name, cwd=PROMETHEUS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
